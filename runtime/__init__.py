"""Where the run computes: the Keras backend (backends.py), its dtype policy (precision.py), JAX compilation
(compilation.py), the distributed search (distributed.py) and, in compat.py, every private name of Keras Tuner,
Keras and TensorFlow the project leans on."""
