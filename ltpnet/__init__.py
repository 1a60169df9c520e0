"""ltpnet: long-term synaptic plasticity in populations of hippocampal neurons, in JAX."""

__version__ = "0.1.0"

from . import dynamics as dynamics
from .connectivity import Connectivity as Connectivity
from .connectivity import fixed_indegree as fixed_indegree
from .params import Params as Params
from .protocols import Protocol as Protocol
from .record import Observe as Observe
from .run import Result as Result
from .run import run_batch as run_batch
from .run import run_chunk as run_chunk
from .run import simulate as simulate
from .run import stack_params as stack_params
from .spec import ModelSpec as ModelSpec
from .state import State as State
from .state import build as build
from .state import init_state as init_state
from .step import Drive as Drive
from .step import discretise as discretise
from .step import step as step

__all__ = [
    "Connectivity", "Drive", "ModelSpec", "Observe", "Params", "Protocol", "Result",
    "State", "build", "discretise", "dynamics", "fixed_indegree", "init_state",
    "run_batch", "run_chunk", "simulate", "stack_params", "step",
]
