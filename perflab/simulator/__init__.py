"""A Polygon-compatible simulator run in its own process."""

from perflab.simulator.config import LOCAL_API_KEY, SimulatorConfig
from perflab.simulator.process import SimulatorProcess, start_simulator

__all__ = ["LOCAL_API_KEY", "SimulatorConfig", "SimulatorProcess", "start_simulator"]
