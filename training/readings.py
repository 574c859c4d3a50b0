"""The thermometer's data: the 11 readings of the seed tutorial, and their checksum as a version's metadata records it.

Plain lists, no torch: the promotion gate and the monitoring reference read them beside the fit.
"""

import hashlib
import json

# The 11 readings from the seed tutorial (shared/seed, "PyTorch实现神经网络"), which follows
# Stevens, Antiga & Viehmann, "Deep Learning with PyTorch" (Manning 2020), chapter 5-6:
# t_u is the thermometer's unknown unit, t_c the matching temperature in degrees Celsius.
T_U = [35.7, 55.9, 58.2, 81.9, 56.3, 48.9, 33.9, 21.8, 48.4, 60.4, 68.4]
T_C = [0.5, 14.0, 15.0, 28.0, 11.0, 8.0, 3.0, -4.0, 6.0, 13.0, 21.0]


def data_sha256() -> str:
    """The checksum of the readings the models are fit to (T_U, T_C), as the metadata records it."""
    return hashlib.sha256(json.dumps({"t_u": T_U, "t_c": T_C}, sort_keys=True).encode()).hexdigest()
