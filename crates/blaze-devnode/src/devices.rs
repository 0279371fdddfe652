//! GPU device assignment on a node, as a device plugin does it at pod admission.
//!
//! The node advertises `nvidia.com/gpu: N`; each pod granted `k` GPUs gets `k` distinct device
//! indices, exported as `NVIDIA_VISIBLE_DEVICES` and `CUDA_VISIBLE_DEVICES`. A pod without
//! GPUs gets `NVIDIA_VISIBLE_DEVICES=void` and an empty `CUDA_VISIBLE_DEVICES`, so, as in a
//! container, it sees no GPU even on a machine that has some.

use std::collections::{BTreeMap, BTreeSet};

/// The GPU resource name.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";

/// Device indices in use on one node, by pod UID.
#[derive(Debug, Clone, Default)]
pub struct DeviceAllocator {
    total: u32,
    by_pod: BTreeMap<String, Vec<u32>>,
}

impl DeviceAllocator {
    /// A node with `total` devices, numbered from 0.
    pub fn new(total: u32) -> Self {
        Self { total, by_pod: BTreeMap::new() }
    }

    /// Gives pod `uid` `count` devices (the same ones again if it has some), lowest first;
    /// `None` when not enough are free.
    pub fn allocate(&mut self, uid: &str, count: u32) -> Option<Vec<u32>> {
        if let Some(existing) = self.by_pod.get(uid) {
            return Some(existing.clone());
        }
        let used: BTreeSet<u32> = self.by_pod.values().flatten().copied().collect();
        let free: Vec<u32> =
            (0..self.total).filter(|d| !used.contains(d)).take(count as usize).collect();
        if free.len() < count as usize {
            return None;
        }
        self.by_pod.insert(uid.to_string(), free.clone());
        Some(free)
    }

    /// Frees pod `uid`'s devices.
    pub fn release(&mut self, uid: &str) {
        self.by_pod.remove(uid);
    }
}

/// The environment that makes exactly `devices` visible.
pub fn visible_devices_env(devices: &[u32]) -> Vec<(String, String)> {
    let list: Vec<String> = devices.iter().map(u32::to_string).collect();
    let nvidia = if list.is_empty() { "void".to_string() } else { list.join(",") };
    vec![
        ("NVIDIA_VISIBLE_DEVICES".to_string(), nvidia),
        ("CUDA_VISIBLE_DEVICES".to_string(), list.join(",")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_are_distinct_and_freed() {
        let mut a = DeviceAllocator::new(4);
        assert_eq!(a.allocate("p1", 2), Some(vec![0, 1]));
        assert_eq!(a.allocate("p2", 1), Some(vec![2]));
        assert_eq!(a.allocate("p1", 2), Some(vec![0, 1]));
        assert_eq!(a.allocate("p3", 2), None);
        a.release("p1");
        assert_eq!(a.allocate("p3", 2), Some(vec![0, 1]));
        assert_eq!(
            visible_devices_env(&[0, 1]),
            vec![
                ("NVIDIA_VISIBLE_DEVICES".to_string(), "0,1".to_string()),
                ("CUDA_VISIBLE_DEVICES".to_string(), "0,1".to_string())
            ]
        );
        assert_eq!(visible_devices_env(&[])[0].1, "void");
    }
}
