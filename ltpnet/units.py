"""Canonical units of ltpnet.

Inside the package every time is in ms, every voltage in mV, concentrations in mM,
firing rates in Hz (spikes per second) and conductances in units of the leak
conductance. Calcium is dimensionless (normalised so that theta_d = 1 in the G&B
variant). These strings are written as `units` attributes into HDF5 files.
"""

MS_PER_S = 1000.0
MS_PER_MIN = 60_000.0
MS_PER_H = 3_600_000.0

TIME = "ms"
VOLTAGE = "mV"
RATE = "Hz"
CONCENTRATION = "mM"
DIMENSIONLESS = "1"
CONDUCTANCE = "g_leak"
