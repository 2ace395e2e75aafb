//! Task-cap planning, as the HA guide computes it: the tasks that must run at once to deploy
//! `projects` projects of `minutes` each within a `window`-minute deployment window.

/// What a cluster needs for one deployment window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapacityPlan {
    /// Smallest total task cap that fits the window.
    pub minimum_total_cap: u32,
    /// A total with headroom for longer-than-average deployments (a third more, rounded up
    /// to a multiple of the node count).
    pub recommended_total_cap: u32,
    /// Per-node cap for the recommended total.
    pub per_node_cap: u32,
}

/// The HA guide's baseline of compute resources for a node running `per_node_cap` tasks at
/// once (its Windows column), the row at or above the cap; a warning past 160.
pub fn guide_baseline(per_node_cap: u32) -> &'static str {
    match per_node_cap {
        0..=10 => "2 cores / 4 GB RAM",
        11..=20 => "4 cores / 8 GB RAM",
        21..=40 => "8 cores / 16 GB RAM",
        41..=80 => "16 cores / 32 GB RAM",
        81..=160 => "32 cores / 64 GB RAM",
        _ => "more than 160 tasks on one node is not recommended: add nodes instead",
    }
}

/// Plans capacity; `None` when an input is zero.
pub fn plan_capacity(projects: u32, minutes: u32, window: u32, nodes: u32) -> Option<CapacityPlan> {
    if projects == 0 || minutes == 0 || window == 0 || nodes == 0 {
        return None;
    }
    let work = u64::from(projects) * u64::from(minutes);
    let minimum = work.div_ceil(u64::from(window)).max(1);
    let with_headroom = (minimum * 4).div_ceil(3);
    let per_node = with_headroom.div_ceil(u64::from(nodes));
    let clamp = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
    Some(CapacityPlan {
        minimum_total_cap: clamp(minimum),
        recommended_total_cap: clamp(per_node * u64::from(nodes)),
        per_node_cap: clamp(per_node),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_guides_example() {
        // 50 applications x 30 minutes in a 120-minute window: 12.5, so at least 13; the guide
        // calls 16 safe, which over two nodes is 8 each.
        let p = plan_capacity(50, 30, 120, 2).unwrap();
        assert_eq!(p.minimum_total_cap, 13);
        assert_eq!(p.recommended_total_cap, 18);
        assert_eq!(p.per_node_cap, 9);
        assert!(p.recommended_total_cap >= 16);
        assert_eq!(plan_capacity(0, 30, 120, 2), None);
        assert_eq!(plan_capacity(1, 1, 1000, 3).unwrap().minimum_total_cap, 1);
    }

    #[test]
    fn the_guides_baselines_go_by_the_row_at_or_above_the_cap() {
        assert_eq!(guide_baseline(5), "2 cores / 4 GB RAM");
        assert_eq!(guide_baseline(10), "2 cores / 4 GB RAM");
        assert_eq!(guide_baseline(11), "4 cores / 8 GB RAM");
        assert_eq!(guide_baseline(80), "16 cores / 32 GB RAM");
        assert!(guide_baseline(161).contains("not recommended"));
    }
}
