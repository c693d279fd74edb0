"""What every role actor answers besides its work."""

from __future__ import annotations

import os


class RoleActor:
    def ready(self) -> dict:
        """Where this actor runs (awaited once at start; also shows placement in tests)."""
        import ray

        return {"pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id()}
