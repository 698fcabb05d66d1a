//! Several control-plane nodes on one PostgreSQL database: how each node learns what the
//! others did, and how the nodes know of each other.
//!
//! - [`follower`]: the change feed follower a node runs with the postgres backend. It holds a
//!   `LISTEN` connection of its own; on a license notification it has the license service read
//!   what changed since the revision it publishes (so its data-plane streams send the delta as
//!   for a local write), on a revocation it ends the data plane's stream here. It also polls
//!   every `storage.postgres.poll_interval`, and reconnects with backoff, so a lost
//!   notification connection never loses a change.
//! - [`nodes`]: each node's stable id (`<data_dir>/node-id`), its heartbeat in the nodes
//!   registry, and `GET /clustering/control-planes` / the `control_plane` of each data plane.

pub mod follower;
pub mod nodes;
