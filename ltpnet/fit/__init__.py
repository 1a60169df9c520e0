"""Fit ltpnet's plasticity parameters to experimental data by gradient descent.

Python API::

    from ltpnet.fit import Free, fit, load_csv
    data = load_csv("bi_poo_1998.csv")
    result = fit(data, model="linear", preset_name="hippocampal_cultures",
                 free={"plasticity.theta_p": Free(1.5, 1.05, 4.0),
                       "calcium.C_post": Free(1.5, 0.1, 5.0)},
                 optimizer=optax.adam(0.05), steps=300, restarts=4)
    result.loss, result.params(), result.extra()

Command line: `ltpnet fit CONFIG -o DIR` (`fit_command`); docs/fitting.md has both.
"""

from .config import ConfigError as ConfigError
from .config import FitConfig as FitConfig
from .config import fit_command as fit_command
from .config import load_config as load_config
from .config import load_params as load_params
from .config import result_json as result_json
from .config import run_config as run_config
from .data import Condition as Condition
from .data import DataError as DataError
from .data import load_csv as load_csv
from .data import load_files as load_files
from .data import write_csv as write_csv
from .model import MODELS as MODELS
from .model import PARAMS as PARAMS
from .model import PRESETS as PRESETS
from .model import ModelOptions as ModelOptions
from .model import predict as predict
from .model import preset as preset
from .optimize import FitResult as FitResult
from .optimize import fit as fit
from .optimize import predict_values as predict_values
from .optimize import times_values as times_values
from .plot import plot_fit as plot_fit
from .transform import FitConfigError as FitConfigError
from .transform import Free as Free

__all__ = [
    "Condition", "ConfigError", "DataError", "FitConfig", "FitConfigError",
    "FitResult", "Free", "MODELS", "ModelOptions", "PARAMS", "PRESETS", "fit",
    "fit_command", "load_config", "load_csv", "load_files", "load_params", "plot_fit",
    "predict", "predict_values", "preset", "result_json", "run_config", "times_values",
    "write_csv",
]
