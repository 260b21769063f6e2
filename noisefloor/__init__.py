"""noisefloor: is a change to a training run real signal, or seed noise?"""

__version__ = "0.1.0"
