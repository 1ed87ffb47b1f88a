//! The device loop of one queue, stepped by the test: it behaves like a VMM's
//! I/O thread. Asleep it waits for a kick; awake it turns avail
//! notifications off and serves chains; when the ring runs dry it turns them
//! back on and sleeps unless more work raced in. A sleeping device never
//! looks at the ring, so a kick the driver fails to send shows up as
//! requests that never complete.

use std::sync::atomic::Ordering;

use virtio_queue::desc::split::Descriptor;
use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

use super::super::config_space::{feature, status, VIRTQ_AVAIL_F_NO_INTERRUPT};
use super::super::memory::Memory;
use super::super::request::Chain;
use super::{CompletionOrder, VmmBlk};

impl VmmBlk {
    /// Runs queue `index` for at most `budget` chains; returns how many it served.
    pub(super) fn step(&mut self, index: u16, budget: usize) -> usize {
        let Some(slot) = self.queues.get_mut(usize::from(index)) else {
            return 0;
        };
        // Taken out while it runs so the disk and the log can be borrowed too.
        let mut queue = match slot.queue.take() {
            Some(queue) if self.status & status::DRIVER_OK != 0 => queue,
            other => {
                slot.queue = other;
                return 0;
            }
        };
        let served = self.run(index, &mut queue, budget);
        self.queues[usize::from(index)].queue = Some(queue);
        served
    }

    fn run(&mut self, index: u16, queue: &mut Queue, budget: usize) -> usize {
        let memory = self.memory.clone();
        let memory = &*memory;
        let event_idx = self.negotiated(feature::EVENT_IDX);
        let slot = &mut self.queues[usize::from(index)];
        let rung = slot.doorbell.load(Ordering::Acquire);
        let new_kicks = rung - slot.kicks_seen;
        slot.kicks_seen = rung;
        slot.stats.kicks += new_kicks;
        if slot.asleep {
            if new_kicks == 0 {
                return 0;
            }
            slot.asleep = false;
            slot.stats.wakeups += 1;
            // Without EVENT_IDX this sets used.flags NO_NOTIFY; with it,
            // `virtio-queue` leaves avail_event where it was, behind us.
            if let Err(error) = queue.disable_notification(memory) {
                self.violation(format!("queue {index}: disable notifications: {error}"));
            }
        } else {
            slot.stats.kicks_while_awake += new_kicks;
        }

        let mut used: Vec<(u16, u32)> = Vec::new();
        loop {
            while used.len() < budget {
                let Some(chain) = queue.pop_descriptor_chain(memory) else {
                    break;
                };
                used.push(self.serve(memory, index, queue, chain));
            }
            if used.len() >= budget {
                // Still awake: the next step looks at the ring again.
                break;
            }
            // Dry: re-enable, then re-check so a publish that raced with the
            // re-enable is not slept through (§2.7.10's device side).
            match queue.enable_notification(memory) {
                Ok(false) => {
                    self.queues[usize::from(index)].asleep = true;
                    break;
                }
                Ok(true) => {
                    if let Err(error) = queue.disable_notification(memory) {
                        self.violation(format!("queue {index}: disable notifications: {error}"));
                    }
                }
                Err(error) => {
                    self.violation(format!("queue {index}: enable notifications: {error}"));
                    break;
                }
            }
        }
        if used.is_empty() {
            return 0;
        }
        let reordered = self.reorder(&mut used);
        for &(head, len) in &used {
            if let Err(error) = queue.add_used(memory, head, len) {
                self.violation(format!("queue {index}: add_used({head}, {len}): {error}"));
            }
        }
        let notify = match queue.needs_notification(memory) {
            Ok(notify) => notify,
            Err(error) => {
                self.violation(format!("queue {index}: needs_notification: {error}"));
                false
            }
        };
        // needs_notification fenced after the used index store, so this load
        // sees the driver's flags as of after our publish.
        let no_interrupt = !event_idx
            && memory
                .load::<u16>(GuestAddress(queue.avail_ring()), Ordering::Relaxed)
                .map(u16::from_le)
                .unwrap_or(0)
                & VIRTQ_AVAIL_F_NO_INTERRUPT
                != 0;
        let stats = &mut self.queues[usize::from(index)].stats;
        stats.batches += 1;
        stats.reordered_batches += u64::from(reordered);
        match (notify, no_interrupt) {
            (true, false) => stats.used_notifications += 1,
            (true, true) => stats.suppressed_by_flag += 1,
            (false, _) => {}
        }
        used.len()
    }

    /// Serves one chain; returns the used element for it.
    fn serve(
        &mut self,
        memory: &Memory,
        index: u16,
        queue: &Queue,
        chain: DescriptorChain<&Memory>,
    ) -> (u16, u32) {
        let head = chain.head_index();
        // virtio-queue follows an indirect table whether or not the feature
        // was negotiated, so the device checks the head itself (§2.7.5.3.1).
        let head_addr = GuestAddress(queue.desc_table() + 16 * u64::from(head));
        match memory.read_obj::<Descriptor>(head_addr) {
            Ok(desc) if desc.refers_to_indirect_table() => {
                self.queues[usize::from(index)].stats.indirect_chains += 1;
                if !self.negotiated(feature::INDIRECT_DESC) {
                    self.violation(format!(
                        "queue {index}: indirect head {head} without INDIRECT_DESC"
                    ));
                }
                if desc.has_next() {
                    self.violation(format!(
                        "queue {index}: head {head} sets both INDIRECT and NEXT"
                    ));
                }
            }
            Ok(_) => {}
            Err(error) => self.violation(format!("queue {index}: head {head}: {error}")),
        }
        let chain = Chain::collect(chain);
        let len = self.disk.serve(memory, &chain);
        self.queues[usize::from(index)].stats.chains += 1;
        (head, len)
    }

    /// Puts `used` in the configured completion order; true if that moved anything.
    fn reorder(&mut self, used: &mut [(u16, u32)]) -> bool {
        let before: Vec<u16> = used.iter().map(|(head, _)| *head).collect();
        match self.config.order {
            CompletionOrder::InOrder => {}
            CompletionOrder::Reversed => used.reverse(),
            CompletionOrder::Shuffled { .. } => {
                for i in (1..used.len()).rev() {
                    let j = (self.next_random() % (i as u64 + 1)) as usize;
                    used.swap(i, j);
                }
            }
        }
        used.iter().map(|(head, _)| *head).ne(before)
    }

    /// xorshift64: deterministic, no dependency.
    fn next_random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }
}
