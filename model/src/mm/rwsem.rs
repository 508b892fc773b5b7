//! `mmap_lock`: a reader/writer semaphore built on the shim's mutex and condition variable, so
//! loom explores it, with the two things `std::sync::RwLock` lacks and the kernel's rwsem has:
//! `mmap_write_downgrade()` (munmap zaps under the read side) and `mmap_read_trylock()` (the
//! OOM reaper). New readers wait behind a waiting writer, as with the kernel's rwsem handoff.

use crate::sync::{Condvar, Mutex};

#[derive(Default)]
struct State {
    readers: usize,
    writer: bool,
    waiting_writers: usize,
}

/// The semaphore. Guards are not RAII here: the mm code pairs calls through its own guards.
#[derive(Default)]
pub(crate) struct Rwsem {
    st: Mutex<State>,
    cv: Condvar,
}

impl Rwsem {
    pub fn read(&self) {
        let mut s = self.st.lock();
        while s.writer || s.waiting_writers > 0 {
            s = self.cv.wait(s);
        }
        s.readers += 1;
    }

    pub fn try_read(&self) -> bool {
        let mut s = self.st.lock();
        if s.writer || s.waiting_writers > 0 {
            return false;
        }
        s.readers += 1;
        true
    }

    pub fn read_unlock(&self) {
        let mut s = self.st.lock();
        s.readers -= 1;
        let wake = s.readers == 0 && s.waiting_writers > 0;
        drop(s);
        if wake {
            self.cv.notify_all();
        }
    }

    pub fn write(&self) {
        let mut s = self.st.lock();
        s.waiting_writers += 1;
        while s.writer || s.readers > 0 {
            s = self.cv.wait(s);
        }
        s.waiting_writers -= 1;
        s.writer = true;
    }

    pub fn write_unlock(&self) {
        let mut s = self.st.lock();
        s.writer = false;
        drop(s);
        self.cv.notify_all();
    }

    /// `mmap_write_downgrade()`: atomically turns the write hold into a read hold.
    pub fn downgrade(&self) {
        let mut s = self.st.lock();
        s.writer = false;
        s.readers += 1;
        drop(s);
        self.cv.notify_all();
    }
}
