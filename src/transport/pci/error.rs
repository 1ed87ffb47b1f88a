//! Why a PCI function cannot be driven: one variant per cause, each naming
//! what to check.

use core::fmt;

use crate::hal::PhysAddr;

/// The register regions of a virtio PCI function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Structure {
    /// Common configuration (`VIRTIO_PCI_CAP_COMMON_CFG`).
    Common,
    /// Notifications (`VIRTIO_PCI_CAP_NOTIFY_CFG`).
    Notify,
    /// ISR status (`VIRTIO_PCI_CAP_ISR_CFG`).
    Isr,
    /// Device-specific configuration (`VIRTIO_PCI_CAP_DEVICE_CFG`).
    DeviceConfig,
    /// The MSI-X table.
    MsixTable,
}

impl fmt::Display for Structure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Structure::Common => "common configuration",
            Structure::Notify => "notification",
            Structure::Isr => "ISR status",
            Structure::DeviceConfig => "device configuration",
            Structure::MsixTable => "MSI-X table",
        })
    }
}

/// Why a PCI function cannot be driven, or an interrupt setup failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PciError {
    /// Vendor/device ID is not a virtio device.
    NotVirtio {
        /// PCI vendor ID read.
        vendor: u16,
        /// PCI device ID read.
        device: u16,
    },
    /// The status register says there is no capability list: a legacy-only device.
    NoCapabilities,
    /// The capability list does not end (a pointer loop).
    CapabilityLoop,
    /// A capability is malformed: it points into the header, is shorter than
    /// its structure, or runs past configuration space.
    BadCapability {
        /// Its offset in configuration space.
        at: u8,
    },
    /// No usable capability for this structure (a legacy device, or every
    /// candidate sits in an I/O BAR).
    MissingCapability(Structure),
    /// The structure's BAR is an I/O BAR, the upper half of a 64-bit BAR, of
    /// a reserved type, or not implemented.
    BadBar {
        /// Which structure.
        structure: Structure,
        /// BAR index.
        bar: u8,
    },
    /// The BAR has no address assigned (firmware did not place it).
    BarNotAssigned {
        /// BAR index.
        bar: u8,
    },
    /// The structure's offset and length reach beyond the end of its BAR.
    OutsideBar {
        /// Which structure.
        structure: Structure,
        /// BAR index.
        bar: u8,
    },
    /// The structure is shorter than the fields the driver needs.
    TooShort(Structure),
    /// The structure's offset (or its mapping) breaks the alignment §4.1.4 requires.
    Misaligned(Structure),
    /// The Hal could not map the region.
    MapFailed {
        /// Physical address asked for.
        paddr: PhysAddr,
        /// Bytes asked for.
        len: usize,
    },
    /// The device has no (usable) MSI-X capability.
    NoMsix,
    /// More MSI-X vectors asked for than the table has.
    TooManyVectors {
        /// Vectors needed (configuration + queues).
        requested: usize,
        /// Table entries.
        available: u16,
    },
    /// An MSI-X message address is not 4-byte aligned.
    BadMsixMessage {
        /// Table entry.
        vector: u16,
    },
    /// The device did not keep an MSI-X vector mapping: it read back
    /// NO_VECTOR (§4.1.5.1.2).
    VectorRefused {
        /// The vector written.
        vector: u16,
        /// The queue, or `None` for the configuration-change vector.
        queue: Option<u16>,
    },
    /// A queue's notification address lies outside the notification region
    /// (or is not 2-byte aligned there).
    NotifyOutsideRegion {
        /// The queue.
        queue: u16,
    },
    /// The device did not read back 0 from `device_status` after a reset.
    ResetTimeout,
    /// The device did not finish a queue reset.
    QueueResetTimeout {
        /// The queue.
        queue: u16,
    },
}

impl fmt::Display for PciError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PciError::NotVirtio { vendor, device } => write!(
                f,
                "PCI function {vendor:04x}:{device:04x} is not a virtio device"
            ),
            PciError::NoCapabilities => write!(
                f,
                "device has no PCI capability list: legacy-only virtio is not supported (use disable-legacy=on or a modern device)"
            ),
            PciError::CapabilityLoop => write!(f, "PCI capability list loops"),
            PciError::BadCapability { at } => {
                write!(f, "malformed PCI capability at config offset {at:#x}")
            }
            PciError::MissingCapability(s) => write!(
                f,
                "no usable virtio {s} capability (legacy device, or only in an I/O BAR)"
            ),
            PciError::BadBar { structure, bar } => write!(
                f,
                "virtio {structure} structure is in BAR {bar}, which is not a memory BAR"
            ),
            PciError::BarNotAssigned { bar } => write!(
                f,
                "BAR {bar} has no address assigned; assign PCI resources first"
            ),
            PciError::OutsideBar { structure, bar } => write!(
                f,
                "virtio {structure} structure reaches beyond the end of BAR {bar}"
            ),
            PciError::TooShort(s) => write!(f, "virtio {s} structure is too short"),
            PciError::Misaligned(s) => write!(f, "virtio {s} structure is misaligned"),
            PciError::MapFailed { paddr, len } => write!(
                f,
                "the Hal could not map {len} bytes of registers at {paddr:#x}"
            ),
            PciError::NoMsix => write!(f, "device has no usable MSI-X capability; use INTx"),
            PciError::TooManyVectors {
                requested,
                available,
            } => write!(
                f,
                "{requested} MSI-X vectors asked for, the device has {available}"
            ),
            PciError::BadMsixMessage { vector } => write!(
                f,
                "MSI-X message address for vector {vector} is not 4-byte aligned"
            ),
            PciError::VectorRefused {
                vector,
                queue: Some(q),
            } => write!(f, "device refused MSI-X vector {vector} for queue {q}"),
            PciError::VectorRefused {
                vector,
                queue: None,
            } => write!(
                f,
                "device refused MSI-X vector {vector} for configuration changes"
            ),
            PciError::NotifyOutsideRegion { queue } => write!(
                f,
                "notification address of queue {queue} is outside the notification region or misaligned"
            ),
            PciError::ResetTimeout => write!(f, "device did not complete a reset"),
            PciError::QueueResetTimeout { queue } => {
                write!(f, "device did not complete the reset of queue {queue}")
            }
        }
    }
}
