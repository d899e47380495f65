"""A remote-control command for the job platform's tests, registered in the test workers only.

``cdss_test_deafen`` puts the worker's task consumer in the state kombu's Redis transport left it
in after some reconnections (celery/kombu#2629): the sockets waiting for tasks leave the event
loop while the transport still counts them as registered, so it never registers them again. The
worker stays connected and answers control commands; it receives no task. What
``cdss.jobs.watch`` must notice and repair.
"""

from __future__ import annotations

from typing import Any

from celery.worker.control import control_command


@control_command()
def cdss_test_deafen(state: Any) -> dict[str, str]:
    """Test only: stop the task consumer from receiving, leaving the connection up."""
    consumer = state.consumer
    cycle = consumer.connection.transport.cycle
    deafened = 0
    for fd, (_, kind) in list(cycle._fd_to_chan.items()):
        if kind == "BRPOP":
            del cycle._fd_to_chan[fd]
            consumer.hub.remove_reader(fd)
            deafened += 1
    return {"ok": f"{deafened} socket(s) deafened"}
