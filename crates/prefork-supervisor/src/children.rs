//! The parent's own table of its children: which pid holds which slot, and since when.
//!
//! The table, not the scoreboard, decides which slots are free: a worker writes its slot only
//! after it has started, and the parent must never hand the same slot to two processes.

use std::collections::BTreeMap;

use nix::unistd::Pid;

use crate::policy::Micros;

/// One forked worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ChildRecord {
    pub pid: Pid,
    pub slot: usize,
    pub generation: u64,
    pub forked_at: Micros,
    /// The parent has told it to stop (SIGTERM sent).
    pub retiring: bool,
    /// When it was SIGKILLed for running a request past `request_timeout` (it cannot refuse:
    /// it is not sent again).
    pub stuck_since: Option<Micros>,
}

/// Live children by pid, and slot occupancy.
#[derive(Debug)]
pub(crate) struct ChildTable {
    by_pid: BTreeMap<i32, ChildRecord>,
    slot_owner: Vec<Option<Pid>>,
}

impl ChildTable {
    pub(crate) fn new(slots: usize) -> ChildTable {
        ChildTable { by_pid: BTreeMap::new(), slot_owner: vec![None; slots] }
    }

    /// The lowest free slot (Apache keeps child numbers low too).
    pub(crate) fn free_slot(&self) -> Option<usize> {
        self.slot_owner.iter().position(Option::is_none)
    }

    pub(crate) fn insert(&mut self, record: ChildRecord) {
        debug_assert!(self.slot_owner[record.slot].is_none(), "slot {} handed out twice", record.slot);
        self.slot_owner[record.slot] = Some(record.pid);
        self.by_pid.insert(record.pid.as_raw(), record);
    }

    pub(crate) fn remove(&mut self, pid: Pid) -> Option<ChildRecord> {
        let record = self.by_pid.remove(&pid.as_raw())?;
        self.slot_owner[record.slot] = None;
        Some(record)
    }

    pub(crate) fn by_slot_mut(&mut self, slot: usize) -> Option<&mut ChildRecord> {
        let pid = self.slot_owner.get(slot).copied().flatten()?;
        self.by_pid.get_mut(&pid.as_raw())
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &ChildRecord> {
        self.by_pid.values()
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut ChildRecord> {
        self.by_pid.values_mut()
    }

    pub(crate) fn len(&self) -> usize {
        self.by_pid.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.by_pid.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(pid: i32, slot: usize) -> ChildRecord {
        ChildRecord { pid: Pid::from_raw(pid), slot, generation: 1, forked_at: 0, retiring: false, stuck_since: None }
    }

    #[test]
    fn slots_are_handed_out_lowest_first_and_freed_on_removal() {
        let mut table = ChildTable::new(3);
        assert_eq!(table.free_slot(), Some(0));
        table.insert(record(10, 0));
        table.insert(record(11, 1));
        assert_eq!(table.free_slot(), Some(2));
        table.insert(record(12, 2));
        assert_eq!(table.free_slot(), None);
        assert_eq!(table.remove(Pid::from_raw(11)).map(|r| r.slot), Some(1));
        assert_eq!(table.free_slot(), Some(1));
        assert!(table.remove(Pid::from_raw(11)).is_none());
        assert_eq!(table.len(), 2);
        assert_eq!(table.by_slot_mut(2).map(|r| r.pid.as_raw()), Some(12));
        assert!(table.by_slot_mut(1).is_none());
    }
}
