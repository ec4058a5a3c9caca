//! The cluster as the Admin API reports it, in one place for both front doors: members, their
//! state and last heartbeat, partitions owned, handoffs in progress.

use switchyard_actors::pipeline::ClusterStatus;
use switchyard_proto::v1;

/// An RFC 3339 time from milliseconds since the epoch.
fn rfc3339(ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms).map(|at| at.to_rfc3339()).unwrap_or_default()
}

/// The status as the gRPC `ClusterStatus` answer.
pub fn to_proto(status: ClusterStatus) -> v1::ClusterStatusResponse {
    let view = status.view;
    v1::ClusterStatusResponse {
        degraded: view.degraded(),
        node: view.this_node,
        clustered: view.clustered,
        members: view
            .members
            .into_iter()
            .map(|member| v1::ClusterMember {
                node: member.node,
                advertise: member.advertise,
                state: member.state.as_str().to_owned(),
                last_heartbeat: member.last_heartbeat_ms.map(rfc3339).unwrap_or_default(),
                incarnation: member.incarnation,
            })
            .collect(),
        map_version: status.map_version,
        partitions_owned: status.partitions_owned,
        handoffs_in_progress: status.handoffs_in_progress,
    }
}

/// The status as the JSON of `GET /admin/v1/cluster`: the gRPC answer's fields.
pub fn to_json(status: ClusterStatus) -> serde_json::Value {
    let answer = to_proto(status);
    serde_json::json!({
        "node": answer.node,
        "clustered": answer.clustered,
        "degraded": answer.degraded,
        "members": answer.members.iter().map(|member| serde_json::json!({
            "node": member.node,
            "advertise": member.advertise,
            "state": member.state,
            "last_heartbeat": (!member.last_heartbeat.is_empty()).then_some(&member.last_heartbeat),
            "incarnation": member.incarnation,
        })).collect::<Vec<_>>(),
        "map_version": answer.map_version,
        "partitions_owned": answer.partitions_owned,
        "handoffs_in_progress": answer.handoffs_in_progress,
    })
}

/// The line `/ready` adds about the cluster, if the node is clustered.
pub fn readiness_line(status: &ClusterStatus) -> Option<String> {
    let view = &status.view;
    if !view.clustered {
        return None;
    }
    Some(if view.degraded() {
        "cluster: degraded, no peer reachable; serving alone".to_owned()
    } else {
        format!("cluster: {} of {} members alive", view.alive.len(), view.members.len())
    })
}
