//! A pool of boxed buffers handed to connections only while they need one, so idle
//! connections cost no buffer memory. Items are boxed so their addresses stay fixed while the
//! kernel reads them; the pool grows on demand and trims what a whole tick did not use, so a
//! burst does not pin its memory forever and steady state allocates nothing.

/// Pooled items of type `T`, addressed by index.
pub struct Pool<T> {
    items: Vec<Option<Box<T>>>,
    free: Vec<u32>,
    make: fn() -> Box<T>,
    /// Fewest free items seen since the last trim: that many were not needed.
    free_low_water: usize,
}

impl<T> Pool<T> {
    /// An empty pool that creates items with `make`.
    pub fn new(make: fn() -> Box<T>) -> Pool<T> {
        Pool { items: Vec::new(), free: Vec::new(), make, free_low_water: 0 }
    }

    /// Takes an item, creating one if none is free.
    pub fn take(&mut self) -> u32 {
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                let index = self.items.iter().position(Option::is_none).unwrap_or_else(|| {
                    self.items.push(None);
                    self.items.len() - 1
                });
                self.items[index] = Some((self.make)());
                index as u32
            }
        };
        self.free_low_water = self.free_low_water.min(self.free.len());
        index
    }

    /// Returns an item taken with `take`.
    pub fn put(&mut self, index: u32) {
        debug_assert!(!self.free.contains(&index));
        self.free.push(index);
    }

    /// The item at `index`.
    pub fn get(&mut self, index: u32) -> &mut T {
        self.items[index as usize].as_deref_mut().expect("pool index refers to a live item")
    }

    /// Frees the items that stayed unused since the last call; returns how many.
    pub fn trim(&mut self) -> usize {
        let spare = self.free_low_water;
        let mut freed = 0;
        for _ in 0..spare {
            if let Some(index) = self.free.pop() {
                self.items[index as usize] = None;
                freed += 1;
            }
        }
        self.free_low_water = self.free.len();
        freed
    }

    /// Items allocated (free or in use).
    pub fn allocated(&self) -> usize {
        self.items.iter().filter(|i| i.is_some()).count()
    }
}

/// After pools freed `freed` items: hands the allocator's free heap back to the kernel, so the
/// resident size returns to its idle level after a burst (freed buffers otherwise stay in the
/// heap).
pub fn release_freed(freed: usize) {
    if freed > 0 {
        // SAFETY: malloc_trim only releases free heap memory; no pointer is involved.
        unsafe { libc::malloc_trim(0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_items_and_trims_unused_ones() {
        let mut pool: Pool<[u8; 4]> = Pool::new(|| Box::new([0; 4]));
        let a = pool.take();
        let b = pool.take();
        pool.get(a)[0] = 7;
        pool.put(a);
        pool.put(b);
        pool.trim(); // low water was 0: both were needed in this period
        assert_eq!(pool.allocated(), 2);
        pool.trim(); // nothing taken since: both are spare
        assert_eq!(pool.allocated(), 0);
        let c = pool.take();
        assert_eq!(pool.get(c), &[0; 4]);
    }
}
