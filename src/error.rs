//! Errors, one variant per cause.

use core::fmt;

/// Everything that can go wrong in setup, submission or completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The device is not a block device.
    WrongDeviceType(u32),
    /// The device does not offer VIRTIO_F_VERSION_1; legacy devices are not driven.
    LegacyDevice,
    /// The device cleared FEATURES_OK: it refused the features the driver accepted.
    FeaturesRejected,
    /// The device asked to be reset (DEVICE_NEEDS_RESET).
    DeviceNeedsReset,
    /// A configuration value makes no sense; the field is named.
    BadConfig(&'static str),
    /// The configuration generation kept changing while it was read.
    ConfigUnstable,
    /// The device offers no usable request queue.
    NoQueues,
    /// The Hal could not provide DMA memory.
    OutOfDmaMemory,
    /// The transport refused an operation.
    Transport(TransportError),
    /// The requested queue size cannot be used with this ring format.
    BadQueueSize(u16),
    /// The device is read-only; writes are refused before they reach the ring.
    ReadOnly,
    /// The request type needs a feature the device did not offer (or the config switched off).
    NotSupported(&'static str),
    /// The request reaches beyond the end of the disk.
    OutOfRange,
    /// Offset or length is not a multiple of the sector or logical block size.
    Misaligned,
    /// More segments than the device (`seg_max`) or the queue allows.
    TooManySegments,
    /// A segment or range exceeds a device limit (`size_max`, `max_*_sectors`).
    TooLarge,
    /// A request with no data where data is needed, or a zero-length segment.
    Empty,
    /// The buffer is smaller than the reply (GET_ID needs 20 bytes).
    TooSmall,
    /// The ring has no room: poll completions first.
    QueueFull,
    /// The device completed the request with VIRTIO_BLK_S_IOERR.
    IoError,
    /// The device completed the request with VIRTIO_BLK_S_UNSUPP.
    Unsupported,
    /// The device broke the protocol; the queue is fenced off and every request on it fails.
    DeviceBroken,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::WrongDeviceType(t) => {
                write!(f, "virtio device type {t} is not a block device (2)")
            }
            Error::LegacyDevice => write!(
                f,
                "device lacks VIRTIO_F_VERSION_1; enable modern mode (disable-legacy=on)"
            ),
            Error::FeaturesRejected => write!(
                f,
                "device did not keep FEATURES_OK after feature negotiation"
            ),
            Error::DeviceNeedsReset => write!(f, "device set DEVICE_NEEDS_RESET"),
            Error::BadConfig(field) => {
                write!(f, "device config field {field} has an impossible value")
            }
            Error::ConfigUnstable => {
                write!(f, "device config generation kept changing while being read")
            }
            Error::NoQueues => write!(f, "device offers no request queue"),
            Error::OutOfDmaMemory => write!(f, "out of DMA memory"),
            Error::Transport(e) => write!(f, "transport: {e}"),
            Error::BadQueueSize(s) => write!(f, "queue size {s} cannot be used"),
            Error::ReadOnly => write!(f, "device is read-only"),
            Error::NotSupported(what) => write!(f, "{what} is not supported by this device"),
            Error::OutOfRange => write!(f, "request reaches beyond the end of the disk"),
            Error::Misaligned => write!(f, "offset or length is not a multiple of the block size"),
            Error::TooManySegments => write!(f, "request has more segments than allowed"),
            Error::TooLarge => write!(f, "request exceeds a device size limit"),
            Error::Empty => write!(f, "request has no data or a zero-length segment"),
            Error::TooSmall => write!(f, "buffer is too small for the reply"),
            Error::QueueFull => write!(f, "queue is full; poll for completions first"),
            Error::IoError => write!(f, "device reported an I/O error"),
            Error::Unsupported => write!(f, "device reported the request as unsupported"),
            Error::DeviceBroken => write!(f, "device broke the virtio protocol; queue disabled"),
        }
    }
}

/// Why the transport refused an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportError {
    /// The queue index is beyond what the device offers.
    NoSuchQueue(u16),
    /// The queue size is zero, too large, or not a power of two where one is needed.
    BadQueueSize(u16),
    /// The queue is already enabled.
    QueueInUse(u16),
    /// The device stopped answering (e.g. the backend went away).
    DeviceGone,
    /// The transport cannot do this (e.g. per-queue reset without RING_RESET).
    Unsupported,
}

impl core::fmt::Display for TransportError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            TransportError::NoSuchQueue(q) => write!(f, "the device has no queue {q}"),
            TransportError::BadQueueSize(s) => write!(f, "queue size {s} is not accepted"),
            TransportError::QueueInUse(q) => write!(f, "queue {q} is already enabled"),
            TransportError::DeviceGone => write!(f, "the device stopped responding"),
            TransportError::Unsupported => write!(f, "the transport does not support this"),
        }
    }
}
