//! Interrupt wiring of the PCI transport (§4.1.4.5, §4.1.5.1.2): MSI-X with
//! one vector per queue and one for configuration changes, or INTx with the
//! ISR status byte read through an [`IsrReader`] handle.

use core::ptr::NonNull;

use super::caps::{self, command, header, MsixCap};
use super::{common, PciConfig, PciError, PciTransport, NO_VECTOR};
use crate::transport::regs::{self, IsrStatus, Regs};

/// Offsets in one MSI-X table entry (PCI 3.0 §6.8.2.6–9).
pub(super) mod msix_entry {
    pub const ADDRESS_LOW: usize = 0;
    pub const ADDRESS_HIGH: usize = 4;
    pub const DATA: usize = 8;
    pub const VECTOR_CONTROL: usize = 12;
    pub const SIZE: usize = 16;
    /// Vector Control: the entry is masked.
    pub const MASKED: u32 = 1;
}

/// One MSI-X message: what the device writes, and where, to raise a vector.
/// The kernel composes it for its interrupt controller (on x86, the local
/// APIC's 0xfee0_0000 window and the vector number).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsixMessage {
    /// Message address (4-byte aligned).
    pub address: u64,
    /// Message data.
    pub data: u32,
}

/// The MSI-X capability with its mapped table.
#[derive(Debug)]
pub(super) struct Msix {
    pub(super) cap: MsixCap,
    pub(super) table: Regs,
}

/// The vector plan [`PciTransport::enable_msix`] stored: vector 0 for
/// configuration changes, vector `1 + q` for queue `q < queues`.
#[derive(Clone, Copy, Debug)]
pub(super) struct VectorPlan {
    pub(super) queues: u16,
}

impl<C: PciConfig> PciTransport<C> {
    /// Entries in the device's MSI-X table, or `None` without (usable) MSI-X.
    /// [`PciTransport::enable_msix`] needs one more than the queues it wires.
    pub fn msix_vectors(&self) -> Option<u16> {
        self.msix.as_ref().ok().map(|m| m.cap.table_size)
    }

    /// True once [`PciTransport::enable_msix`] succeeded (until disabled).
    pub fn msix_enabled(&self) -> bool {
        self.plan.is_some()
    }

    /// Switches the device to MSI-X: table entry 0 gets `config_vector`
    /// (configuration changes), entry `1 + q` gets `queue_vectors[q]`; all
    /// are unmasked, MSI-X is enabled and INTx disabled. The device is asked
    /// to map the configuration vector at once (an error if it refuses);
    /// each queue's vector is written, and read back, when the queue is set
    /// up, before it is enabled (§4.1.5.1.2, §4.1.5.1.3) — so call this
    /// before [`crate::BlkDevice::new`]. The plan survives device resets
    /// (`BlkDevice::recover`). A queue beyond `queue_vectors` gets no vector
    /// (poll it). On error the device is left on INTx.
    pub fn enable_msix(
        &mut self,
        config_vector: MsixMessage,
        queue_vectors: &[MsixMessage],
    ) -> Result<(), PciError> {
        let msix = self.msix.as_ref().map_err(|e| *e)?;
        let requested = queue_vectors.len() + 1;
        if requested > usize::from(msix.cap.table_size) {
            return Err(PciError::TooManyVectors {
                requested,
                available: msix.cap.table_size,
            });
        }
        let messages = core::iter::once(&config_vector).chain(queue_vectors);
        for (vector, message) in messages.clone().enumerate() {
            if message.address & 3 != 0 {
                return Err(PciError::BadMsixMessage {
                    vector: vector as u16,
                });
            }
        }
        // Program each entry while it is masked, then unmask it; entries not
        // in the plan stay masked (PCI 3.0 §6.8.3.5).
        for vector in 0..usize::from(msix.cap.table_size) {
            let entry = vector * msix_entry::SIZE;
            msix.table
                .write::<u32>(entry + msix_entry::VECTOR_CONTROL, msix_entry::MASKED);
        }
        for (vector, message) in messages.enumerate() {
            let entry = vector * msix_entry::SIZE;
            let table = &msix.table;
            table.write::<u32>(entry + msix_entry::ADDRESS_LOW, message.address as u32);
            table.write::<u32>(
                entry + msix_entry::ADDRESS_HIGH,
                (message.address >> 32) as u32,
            );
            table.write::<u32>(entry + msix_entry::DATA, message.data);
            table.write::<u32>(entry + msix_entry::VECTOR_CONTROL, 0);
        }
        let at = u16::from(msix.cap.at) + caps::MSIX_CONTROL;
        let control = self.config.read_u16(at);
        self.config.write_u16(
            at,
            (control | caps::MSIX_ENABLE) & !caps::MSIX_FUNCTION_MASK,
        );
        let cmd = self.config.read_u16(header::COMMAND);
        self.config
            .write_u16(header::COMMAND, cmd | command::INTX_DISABLE);

        self.plan = Some(VectorPlan {
            queues: queue_vectors.len() as u16,
        });
        self.config_vector_mapped = false;
        if let Err(error) = self.map_config_vector() {
            self.disable_msix();
            return Err(error);
        }
        Ok(())
    }

    /// Back to INTx: unmaps the configuration vector, disables MSI-X and
    /// re-enables INTx. Queues set up later get no vector.
    pub fn disable_msix(&mut self) {
        let Ok(msix) = &self.msix else { return };
        let at = u16::from(msix.cap.at) + caps::MSIX_CONTROL;
        self.common.write::<u16>(common::MSIX_CONFIG, NO_VECTOR);
        let control = self.config.read_u16(at);
        self.config.write_u16(at, control & !caps::MSIX_ENABLE);
        let cmd = self.config.read_u16(header::COMMAND);
        self.config
            .write_u16(header::COMMAND, cmd & !command::INTX_DISABLE);
        self.plan = None;
        self.config_vector_mapped = false;
    }

    /// Maps the configuration-change event to vector 0 and checks the device
    /// kept it (a reset unmaps every vector, §4.1.5.1.2.1).
    fn map_config_vector(&mut self) -> Result<(), PciError> {
        if self.plan.is_none() || self.config_vector_mapped {
            return Ok(());
        }
        self.common.write::<u16>(common::MSIX_CONFIG, 0);
        let read = self.common.read::<u16>(common::MSIX_CONFIG);
        if read != 0 {
            return Err(self.fail(PciError::VectorRefused {
                vector: 0,
                queue: None,
            }));
        }
        self.config_vector_mapped = true;
        Ok(())
    }

    /// Maps the selected queue's events to its planned vector (or none) and
    /// checks the device kept it.
    pub(super) fn map_queue_vector(&mut self, queue: u16) -> Result<(), PciError> {
        let Some(plan) = self.plan else { return Ok(()) };
        self.map_config_vector()?;
        let vector = if queue < plan.queues {
            queue + 1
        } else {
            log::warn!("virtio-pci: queue {queue} has no MSI-X vector; it must be polled");
            NO_VECTOR
        };
        self.common.write::<u16>(common::QUEUE_MSIX_VECTOR, vector);
        if self.common.read::<u16>(common::QUEUE_MSIX_VECTOR) != vector {
            return Err(self.fail(PciError::VectorRefused {
                vector,
                queue: Some(queue),
            }));
        }
        Ok(())
    }

    /// The INTx line firmware routed (configuration header 0x3c).
    pub fn interrupt_line(&self) -> u8 {
        self.config.read_u8(header::INTERRUPT_LINE)
    }

    /// The INTx pin (1..=4 for INTA#..INTD#; 0 when the function has none).
    pub fn interrupt_pin(&self) -> u8 {
        self.config.read_u8(header::INTERRUPT_PIN)
    }

    /// Reads (and so acknowledges) the ISR status (§4.1.4.5). For INTx; with
    /// MSI-X enabled the ISR is not used.
    pub fn read_isr(&self) -> IsrStatus {
        self.isr_reader().read()
    }

    /// A handle that reads the ISR status from an interrupt handler on any CPU.
    pub fn isr_reader(&self) -> IsrReader {
        IsrReader { isr: self.isr }
    }
}

/// Reads the ISR status byte from an interrupt handler, on any CPU, without
/// the transport (§4.1.4.5). Reading clears the byte and de-asserts INTx, so
/// read it once per interrupt and act on both bits.
#[derive(Clone, Copy, Debug)]
pub struct IsrReader {
    isr: NonNull<u8>,
}

// SAFETY: the pointer is a byte register of a permanent mapping (the Hal's
// `map_mmio` contract); concurrent volatile reads are what the ISR register
// is for, and nothing else is reached through it.
unsafe impl Send for IsrReader {}
// SAFETY: as for Send: `read` takes `&self` and only does a volatile read.
unsafe impl Sync for IsrReader {}

impl IsrReader {
    /// Reads and acknowledges the ISR status.
    pub fn read(&self) -> IsrStatus {
        // SAFETY: `isr` came from `Regs::reg` on the mapped ISR window (at
        // least one byte, checked in `PciTransport::new`); the mapping is permanent.
        let bits = unsafe { regs::read_reg(self.isr) };
        IsrStatus::from_bits(u32::from(bits))
    }
}
