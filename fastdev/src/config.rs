//! What the device offers: virtio and vhost-user feature bits, and its
//! configuration space (VIRTIO 1.2 §5.2.4).

use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_MQ, VIRTIO_BLK_F_SEG_MAX,
};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};

/// Bytes of one sector: the unit of `capacity` and of a request's `sector`.
pub const SECTOR: u64 = 512;

/// Bytes of the configuration space served; a GET_CONFIG may ask for any
/// range inside it (VHOST_USER_CONFIG_SIZE, the protocol's limit, is 256).
pub const CONFIG_SPACE: usize = 256;

/// The virtio features offered: VERSION_1, EVENT_IDX, INDIRECT_DESC, and
/// the block features SEG_MAX, BLK_SIZE, FLUSH, MQ; plus vhost-user's
/// PROTOCOL_FEATURES bit. No RING_PACKED: rust-vmm's `virtio-queue` 0.18
/// implements split rings only, and `vhost-user-backend`'s GET_VRING_BASE
/// knows no packed wrap counters.
pub fn virtio_features() -> u64 {
    (1 << VIRTIO_F_VERSION_1)
        | (1 << VIRTIO_RING_F_EVENT_IDX)
        | (1 << VIRTIO_RING_F_INDIRECT_DESC)
        | (1 << VIRTIO_BLK_F_SEG_MAX)
        | (1 << VIRTIO_BLK_F_BLK_SIZE)
        | (1 << VIRTIO_BLK_F_FLUSH)
        | (1 << VIRTIO_BLK_F_MQ)
        | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
}

/// The vhost-user protocol features offered: CONFIG (the block config
/// space), MQ, REPLY_ACK, CONFIGURE_MEM_SLOTS (libblkio's frontend needs
/// ADD_MEM_REGION) and RESET_DEVICE.
pub fn protocol_features() -> VhostUserProtocolFeatures {
    VhostUserProtocolFeatures::CONFIG
        | VhostUserProtocolFeatures::MQ
        | VhostUserProtocolFeatures::REPLY_ACK
        | VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS
        | VhostUserProtocolFeatures::RESET_DEVICE
}

/// The configuration space, VIRTIO 1.2 §5.2.4 (little-endian): `capacity`
/// at 0, `seg_max` at 12, `blk_size` at 20, `num_queues` at 34; everything
/// else zero.
pub fn config_space(capacity_bytes: u64, seg_max: u32, queues: u16) -> [u8; CONFIG_SPACE] {
    let mut space = [0u8; CONFIG_SPACE];
    space[0..8].copy_from_slice(&(capacity_bytes / SECTOR).to_le_bytes());
    space[12..16].copy_from_slice(&seg_max.to_le_bytes());
    space[20..24].copy_from_slice(&(SECTOR as u32).to_le_bytes());
    space[34..36].copy_from_slice(&queues.to_le_bytes());
    space
}

/// The bytes GET_CONFIG asks for, exactly `size` of them, or `None` when
/// the range leaves the configuration space.
pub fn config_range(space: &[u8; CONFIG_SPACE], offset: u32, size: u32) -> Option<Vec<u8>> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(usize::try_from(size).ok()?)?;
    space.get(start..end).map(<[u8]>::to_vec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_space_has_capacity_seg_max_blk_size_and_queues_where_the_spec_puts_them() {
        let space = config_space(1 << 20, 126, 2);
        assert_eq!(u64::from_le_bytes(space[0..8].try_into().unwrap()), 2048);
        assert_eq!(u32::from_le_bytes(space[12..16].try_into().unwrap()), 126);
        assert_eq!(u32::from_le_bytes(space[20..24].try_into().unwrap()), 512);
        assert_eq!(u16::from_le_bytes(space[34..36].try_into().unwrap()), 2);
    }

    #[test]
    fn config_ranges_are_exact_or_refused() {
        let space = config_space(4096, 1, 1);
        assert_eq!(config_range(&space, 0, 8).unwrap(), 8u64.to_le_bytes());
        assert_eq!(config_range(&space, 0, 256).unwrap().len(), 256);
        assert!(config_range(&space, 250, 8).is_none());
        assert!(config_range(&space, u32::MAX, 8).is_none());
    }

    #[test]
    fn no_packed_ring_is_offered() {
        assert_eq!(virtio_features() & (1 << 34), 0);
        assert_ne!(virtio_features() & (1 << VIRTIO_RING_F_EVENT_IDX), 0);
    }
}
