//! Work spread over the cores: start-up reads, hashes and verifies every
//! stored artifact, and the inbox verifies bursts, in chunks on threads of
//! their own, results kept in order.

/// Most threads used at once.
const MAX_THREADS: usize = 16;

/// `f` over `items` cut in one chunk per core (at most [`MAX_THREADS`]),
/// each on its own thread; one result per item, in order. A chunk whose
/// thread panicked, or that gave a result count other than its item count,
/// gets `failed()` for each item, so that results never shift onto other
/// items.
pub fn on_every_core<T: Sync, R: Send>(
    items: &[T],
    f: impl Fn(&[T]) -> Vec<R> + Sync,
    failed: impl Fn() -> R,
) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_THREADS);
    let chunk = items.len().div_ceil(threads).max(1);
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| (part.len(), scope.spawn(move || f(part))))
            .collect();
        handles
            .into_iter()
            .flat_map(|(n, h)| {
                h.join()
                    .ok()
                    .filter(|r| r.len() == n)
                    .unwrap_or_else(|| (0..n).map(|_| failed()).collect())
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_that_panics_fails_its_own_items_and_shifts_no_other_result() {
        let items: Vec<usize> = (0..100).collect();
        let r = on_every_core(
            &items,
            |part| {
                assert!(!part.contains(&0), "a chunk fails");
                part.iter().map(|&i| Some(i)).collect()
            },
            || None,
        );
        assert_eq!(r.len(), items.len());
        assert_eq!(r[0], None);
        for (i, got) in r.iter().enumerate() {
            assert!(got.is_none() || *got == Some(i), "item {i} got {got:?}");
        }
        // A chunk that answers for fewer items than it was given fails too.
        let short = on_every_core(&items, |part| vec![Some(part[0]); part.len() - 1], || None);
        assert!(short.iter().all(Option::is_none));
    }
}
