"""The answers the relay's gateway is carrying, so that a stop (SIGTERM: relay/server.py's drain) can wait for them
and, once the drain time is over, end each one with an error event rather than a cut."""

import asyncio

from node_agent.errors import AgentError


class InFlight:
    def __init__(self):
        self.tasks: dict[asyncio.Task, bool] = {}  # each answer's handler task: True once cut by a stop

    def __bool__(self) -> bool:
        return bool(self.tasks)

    def enter(self) -> None:
        self.tasks[asyncio.current_task()] = False

    def leave(self) -> None:
        self.tasks.pop(asyncio.current_task(), None)

    def cut_all(self) -> None:
        for task in self.tasks:
            self.tasks[task] = True
            task.cancel()

    def cut_error(self) -> AgentError | None:
        """In a cancelled handler: the error its answer ends with when a stop cut it (the cancellation is taken
        back), else None (its taster went away)."""
        task = asyncio.current_task()
        if not self.tasks.get(task):
            return None
        task.uncancel()
        return AgentError(503, "upstream_unavailable", "The relay is restarting; this answer was ended early.")
