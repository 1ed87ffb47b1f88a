//! Interrupt controllers: each CPU's local APIC (xAPIC, MMIO at
//! 0xFEE0_0000) and the I/O APIC (0xFEC0_0000) that routes INTx and
//! virtio-mmio lines. The legacy 8259 PICs are masked for good.

use virtio_blk_mq::sync::SpinLock;

use crate::arch::outb;

const LAPIC_BASE: usize = 0xFEE0_0000;
const IOAPIC_BASE: usize = 0xFEC0_0000;

mod reg {
    pub const ID: usize = 0x20;
    pub const TPR: usize = 0x80;
    pub const EOI: usize = 0xB0;
    pub const SVR: usize = 0xF0;
    pub const ICR_LOW: usize = 0x300;
    pub const ICR_HIGH: usize = 0x310;
    pub const LVT_TIMER: usize = 0x320;
    pub const LVT_LINT0: usize = 0x350;
    pub const LVT_LINT1: usize = 0x360;
    pub const TIMER_INITIAL: usize = 0x380;
    pub const TIMER_DIVIDE: usize = 0x3E0;
}

/// Vector of spurious interrupts (no EOI for these).
pub const SPURIOUS_VECTOR: u8 = 0xFF;

const LVT_MASKED: u32 = 1 << 16;
const ICR_DELIVERY_PENDING: u32 = 1 << 12;

fn lapic_read(offset: usize) -> u32 {
    // SAFETY: the local APIC's registers are identity-mapped (first 4 GiB)
    // and 32-bit aligned; reads have no side effects.
    unsafe { ((LAPIC_BASE + offset) as *const u32).read_volatile() }
}

fn lapic_write(offset: usize, value: u32) {
    // SAFETY: as lapic_read; each write is to a register whose effect the
    // caller in this module intends.
    unsafe { ((LAPIC_BASE + offset) as *mut u32).write_volatile(value) }
}

/// Masks both 8259 PICs: every line goes through the I/O APIC instead.
pub fn mask_legacy_pic() {
    // SAFETY: the PICs' data ports; writing all ones masks every IRQ. On a
    // machine without PICs the writes go nowhere.
    unsafe {
        outb(0x21, 0xFF);
        outb(0xA1, 0xFF);
    }
}

/// Enables the calling CPU's local APIC: spurious vector set, LINT0/LINT1
/// and the timer masked, every priority accepted.
pub fn init_local() {
    lapic_write(reg::SVR, 0x100 | u32::from(SPURIOUS_VECTOR));
    lapic_write(reg::LVT_LINT0, LVT_MASKED);
    lapic_write(reg::LVT_LINT1, LVT_MASKED);
    lapic_write(reg::LVT_TIMER, LVT_MASKED);
    lapic_write(reg::TPR, 0);
}

/// Starts the local APIC timer in periodic mode on `vector`: a heartbeat
/// that bounds every `hlt`, so a lost interrupt shows up as a timed-out
/// wait instead of a hang.
pub fn start_heartbeat(vector: u8, initial_count: u32) {
    lapic_write(reg::TIMER_DIVIDE, 0b1011); // divide by 1
    lapic_write(reg::LVT_TIMER, 1 << 17 | u32::from(vector)); // periodic
    lapic_write(reg::TIMER_INITIAL, initial_count);
}

/// The calling CPU's local APIC id.
pub fn id() -> u32 {
    lapic_read(reg::ID) >> 24
}

/// Signals the end of the interrupt being handled.
pub fn eoi() {
    lapic_write(reg::EOI, 0);
}

fn send_icr(destination: u32, low: u32) {
    lapic_write(reg::ICR_HIGH, destination << 24);
    lapic_write(reg::ICR_LOW, low);
    while lapic_read(reg::ICR_LOW) & ICR_DELIVERY_PENDING != 0 {
        core::hint::spin_loop();
    }
}

/// Sends a fixed interrupt on `vector` to the CPU with APIC id `apic_id`.
pub fn send_ipi(apic_id: u32, vector: u8) {
    send_icr(apic_id, u32::from(vector));
}

/// Sends INIT (assert, level) to `apic_id`.
pub fn send_init(apic_id: u32) {
    send_icr(apic_id, 0x0000_4500);
}

/// Sends a start-up IPI: the CPU starts in real mode at `page << 12`.
pub fn send_startup(apic_id: u32, page: u8) {
    send_icr(apic_id, 0x0000_4600 | u32::from(page));
}

/// How an I/O APIC input signals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// Edge-triggered, active high (ISA style; how Kerla's `attach_irq`
    /// programs every line, so the kext API stand-in does too).
    Edge,
    /// Level-triggered, active high as QEMU presents PCI INTx and
    /// virtio-mmio lines to the I/O APIC.
    Level,
}

/// Serialises the select-then-access register pairs of the I/O APIC.
static IOAPIC: SpinLock<()> = SpinLock::new(());

fn ioapic_read(index: u32) -> u32 {
    // SAFETY: IOREGSEL/IOWIN of the I/O APIC, identity-mapped; the caller
    // holds the IOAPIC lock so the pair is not interleaved.
    unsafe {
        (IOAPIC_BASE as *mut u32).write_volatile(index);
        ((IOAPIC_BASE + 0x10) as *const u32).read_volatile()
    }
}

fn ioapic_write(index: u32, value: u32) {
    // SAFETY: as ioapic_read.
    unsafe {
        (IOAPIC_BASE as *mut u32).write_volatile(index);
        ((IOAPIC_BASE + 0x10) as *mut u32).write_volatile(value);
    }
}

/// Inputs the I/O APIC has.
pub fn ioapic_inputs() -> u32 {
    let _guard = IOAPIC.lock();
    (ioapic_read(1) >> 16 & 0xFF) + 1
}

/// Routes I/O APIC input `gsi` to `vector` on the CPU with APIC id `apic_id`.
pub fn route(gsi: u32, vector: u8, apic_id: u32, trigger: Trigger) -> Result<(), &'static str> {
    if gsi >= ioapic_inputs() {
        return Err("the I/O APIC has no such input");
    }
    let _guard = IOAPIC.lock();
    let mut low = u32::from(vector); // fixed delivery, physical destination
    if trigger == Trigger::Level {
        low |= 1 << 15;
    }
    ioapic_write(0x10 + 2 * gsi + 1, apic_id << 24);
    ioapic_write(0x10 + 2 * gsi, low);
    Ok(())
}

/// The message an MSI or MSI-X entry sends to raise `vector` on `apic_id`
/// (Intel SDM vol. 3 §11.11): (address, data).
pub fn msi_message(apic_id: u32, vector: u8) -> (u64, u32) {
    (0xFEE0_0000 | u64::from(apic_id) << 12, u32::from(vector))
}
