"""Fused Triton kernels for the NAFBlock (installed as ``ctdn.kernels``).

Not built yet: the fused kernels and the ``triton`` backend are the work of the Triton issue.
Importing this package is cheap and never imports triton.
"""
