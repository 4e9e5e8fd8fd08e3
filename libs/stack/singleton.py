"""One active replica and hot standbys, for a processor whose state is not partitioned yet.

A processor in global mode (one state over every input partition) is wrong as soon as two
replicas share its consumer group: Kafka splits the partitions and each replica folds its share
as if it were everything. :class:`SingleActiveAssignor` is a Faust partition assignor that gives
every partition to one member of the group and none to the others: any number of replicas may
run (``kubectl scale``, an overlapping rolling update), one folds, and the others stand by until
it leaves or its session times out, when one of them is given everything. The member that was
active keeps it when another joins (Faust puts each member's current assignment in its join
metadata), so a standby starting never moves the state.
"""

from __future__ import annotations

from typing import Any

from faust.assignor import PartitionAssignor
from faust.assignor.client_assignment import ClientAssignment


class SingleActiveAssignor(PartitionAssignor):
    """Every partition to one member: the one active before, else the lowest member id."""

    def _perform_assignment(self, cluster: Any, member_metadata: Any) -> Any:
        clients = {member: self._get_client_metadata(meta) for member, meta in member_metadata.items()}
        active = next(
            (m for m in sorted(clients) if any(clients[m].assignment.actives.values())), min(clients)
        )
        assignment = dict(super()._perform_assignment(cluster, {active: member_metadata[active]}))
        self._update_member_urls(clients)
        idle = {m: ClientAssignment(actives={}, standbys={}) for m in clients if m != active}
        assignment.update(self._protocol_assignments(idle, {}, {}, {}))
        return assignment
