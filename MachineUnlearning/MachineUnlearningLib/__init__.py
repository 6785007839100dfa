"""MachineUnlearningLib: the engine of the MachineUnlearning 3D Slicer extension.

Subject-level machine unlearning for MedicalNet-style 3D segmentation models trained on
MRBrainS18-layout cohorts. Nothing in this package imports Slicer except ``scene.py``; heavy
libraries (torch, monai, nibabel) are imported inside the modules that need them, so that
``python -m MachineUnlearningLib --help`` stays instant.
"""

__version__ = "0.1.0"
