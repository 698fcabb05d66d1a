//! Sample fleets for the template tests and the `ui` benchmark (`licsync-bench ui`): a
//! [`Snapshot`] of any size with a mix of every health, sync status, certificate urgency and
//! license held, built without a control plane so rendering is measured alone.

use time::macros::date;
use uuid::Uuid;

use super::model::{LicenseInfo, Snapshot};
use crate::dataplanes::{DataPlaneView, Health, SyncStatus};
use crate::ha::nodes::ControlPlaneView;
use crate::usage::UsageMonth;
use crate::usage::report::{Counter, DataPlaneUsage, UsageTotals};

/// The sample's clock: 2026-12-02 00:00 UTC.
pub const NOW: i64 = 1_796_169_600;

/// A snapshot at [`NOW`] with `dataplanes` data planes, two control-plane nodes and two
/// licenses (the active one expiring in 29 days, an older one expired).
pub fn snapshot(dataplanes: usize) -> Snapshot {
    let nodes: Vec<ControlPlaneView> = (0..2u128)
        .map(|i| ControlPlaneView {
            id: Uuid::from_u128(0xc0de_0000 + i),
            advertised_url: format!("https://cp{}.example:8005", i + 1),
            version: licsync_common::VERSION.into(),
            started_at: NOW - 86_400,
            last_seen: NOW - 2,
            dataplanes_connected: dataplanes / 2,
            alive: true,
        })
        .collect();
    let active = LicenseInfo {
        id: Uuid::from_u128(0xa11ce),
        customer: "Example Company, Inc".into(),
        license_key: "00141000017ODj3AAG_a1V41000004wT0OEAU".into(),
        product: Some("Konnect Enterprise".into()),
        created: date!(2025 - 12 - 31),
        expires: date!(2026 - 12 - 31),
        entitled: Some(dataplanes.max(1) as u64),
        updated_at: NOW - 3_600,
        active: true,
    };
    let old = LicenseInfo {
        id: Uuid::from_u128(0x01d),
        customer: "Example Company, Inc".into(),
        license_key: "00141000017ODj3AAG_OLDOLDOLD".into(),
        product: None,
        created: date!(2024 - 11 - 01),
        expires: date!(2025 - 11 - 01),
        entitled: Some(5),
        updated_at: NOW - 400 * 86_400,
        active: false,
    };
    let healths = [
        Health::Healthy,
        Health::Healthy,
        Health::Healthy,
        Health::Degraded,
        Health::Unhealthy,
        Health::Uninitialized,
    ];
    let syncs = [
        SyncStatus::Normal,
        SyncStatus::Normal,
        SyncStatus::Normal,
        SyncStatus::Unknown,
        SyncStatus::LicenseRejected,
        SyncStatus::ApplyFailed,
        SyncStatus::VersionIncompatible,
    ];
    let fleet = (0..dataplanes)
        .map(|i| {
            let health = healths[i % healths.len()];
            let connected = matches!(health, Health::Healthy | Health::Degraded);
            let license = match i % 5 {
                0..=2 => Some((active.id, active.updated_at)),
                3 => Some((old.id, old.updated_at)),
                _ => None,
            };
            DataPlaneView {
                id: Uuid::from_u128(i as u128 + 1),
                name: format!("edge-{i:05}"),
                hostname: format!("gw{}.dc{}.example", i, i % 3),
                ip: format!("10.{}.{}.{}", i / 65_536 % 256, i / 256 % 256, i % 256),
                version: licsync_common::VERSION.into(),
                registered_at: NOW - 30 * 86_400,
                last_seen: (health != Health::Uninitialized).then_some(NOW - (i % 400) as i64),
                connected,
                sync_status: syncs[i % syncs.len()],
                sync_error: None,
                last_rejection: None,
                revision: 42,
                license_id: license.map(|l| l.0),
                license_updated_at: license.map(|l| l.1),
                cert_expires_at: NOW + (i % 90) as i64 * 86_400 - 86_400,
                health,
                control_plane: connected.then(|| nodes[i % 2].id),
            }
        })
        .collect();
    Snapshot {
        now: NOW,
        dataplanes: fleet,
        nodes: nodes.clone(),
        licenses: vec![old, active],
        storage_problem: None,
        this_node: nodes[0].id,
    }
}

/// Twelve months of usage for every data plane of `snapshot`, from 2026-01.
pub fn usage(snapshot: &Snapshot) -> (UsageTotals, UsageMonth) {
    let since = UsageMonth::new(2026, 1)
        .unwrap_or_else(|_| UsageMonth::clamped(time::OffsetDateTime::UNIX_EPOCH));
    let months: Vec<String> = (1..=12).rev().map(|m| format!("2026-{m:02}")).collect();
    let per_dp: Vec<DataPlaneUsage> = snapshot
        .dataplanes
        .iter()
        .enumerate()
        .map(|(i, dp)| {
            let counters: Vec<Counter> = months
                .iter()
                .enumerate()
                .map(|(m, bucket)| Counter {
                    bucket: bucket.clone(),
                    request_count: (i as u64 % 7 + 1) * (1_000 + 100 * m as u64),
                })
                .collect();
            DataPlaneUsage {
                id: dp.id,
                name: dp.name.clone(),
                total_requests: counters.iter().map(|c| c.request_count).sum(),
                counters,
            }
        })
        .collect();
    let counters: Vec<Counter> = months
        .iter()
        .enumerate()
        .map(|(m, bucket)| Counter {
            bucket: bucket.clone(),
            request_count: per_dp.iter().map(|d| d.counters[m].request_count).sum(),
        })
        .collect();
    let totals = UsageTotals {
        total_requests: counters.iter().map(|c| c.request_count).sum(),
        counters,
        dataplanes: Some(per_dp),
    };
    (totals, since)
}
