"""The one optimisation loop, its step vocabulary (torch-free), losses and named recipes."""
