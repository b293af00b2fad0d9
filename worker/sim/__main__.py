"""`python -m worker.sim --port P ...`: the same command as `modstream sim-vllm`."""

from .cli import sim_vllm

if __name__ == "__main__":
    sim_vllm(prog_name="python -m worker.sim")
