"""Pure update functions, one module per part of the model; `ltpnet.step` orders them."""

from . import consolidation, homeostasis, neuron, plasticity, synapse

__all__ = ["consolidation", "homeostasis", "neuron", "plasticity", "synapse"]
