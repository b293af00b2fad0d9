"""A protocol-faithful vLLM simulator for load, fault and escalation tests (see docs/simulator.md).

`SimulatorProcess` runs one in a subprocess; `build_app`/`serve` (worker.sim.server) run one
in-process; `sim_vllm` (worker.sim.cli) is the click command behind `modstream sim-vllm`.
"""

from .config import FaultSettings, SimConfig
from .process import SimulatorProcess

__all__ = ["FaultSettings", "SimConfig", "SimulatorProcess"]
