"""Teacher and student training (installed as ``ctdn.train``).

Not built yet: the training code is the work of the student issue. The data it will consume
(simulated pairs, phantoms, Mayo and .npy readers) lives in :mod:`ctdn.sim` and :mod:`ctdn.datasets`.
"""
