//! Held-out views of a dataset: which samples a validation set takes out of training
//! ([`held_out_indices`], a pure function of `(len, count, seed)`), and a dataset made
//! of some samples of another ([`Subset`]).
//!
//! The choice is drawn from a seed of its own (not a run's training seed), so that every
//! run of a sweep holds out the same images and is measured on them.

use std::sync::Arc;

use crate::rng::{domain, Rng};
use crate::{BadImage, DataError, Dataset};

/// `count` distinct indices of `0..len`, ascending: the first `count` positions of a
/// Fisher–Yates permutation drawn from `(seed, len)`. `count` is clamped to `len`.
pub fn held_out_indices(len: usize, count: usize, seed: u64) -> Vec<usize> {
    let count = count.min(len);
    let mut p: Vec<usize> = (0..len).collect();
    let mut rng = Rng::from_key(&[domain::HOLD_OUT, seed, len as u64]);
    // The first `count` draws of a forward Fisher–Yates shuffle: an unbiased sample
    // without computing the rest of the permutation.
    for i in 0..count {
        let j = i + rng.below((len - i) as u64) as usize;
        p.swap(i, j);
    }
    p.truncate(count);
    p.sort_unstable();
    p
}

/// The indices of `0..len` not in `held_out` (ascending; `held_out` ascending too).
pub fn complement(len: usize, held_out: &[usize]) -> Vec<usize> {
    let mut held = held_out.iter().peekable();
    (0..len)
        .filter(|i| {
            if held.peek() == Some(&i) {
                held.next();
                false
            } else {
                true
            }
        })
        .collect()
}

/// The samples `indices` of `inner`, as a dataset: sample `k` is `inner`'s sample
/// `indices[k]`.
///
/// For an [`crate::ImageFolder`], whose unreadable images are replaced by the next
/// readable one in folder order (which may lie outside the subset), use
/// [`crate::ImageFolder::select`] instead: it never reaches outside its samples.
pub struct Subset {
    inner: Arc<dyn Dataset>,
    indices: Vec<usize>,
}

impl std::fmt::Debug for Subset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subset").field("len", &self.indices.len()).field("of", &self.inner.len()).finish()
    }
}

impl Subset {
    /// Refuses an empty subset or an index past the end of `inner`.
    pub fn new(inner: Arc<dyn Dataset>, indices: Vec<usize>) -> Result<Self, DataError> {
        if indices.is_empty() {
            return Err(DataError::Config("a subset needs at least one sample".into()));
        }
        if let Some(&i) = indices.iter().find(|&&i| i >= inner.len()) {
            return Err(DataError::Config(format!("subset index {i} out of range for {} samples", inner.len())));
        }
        Ok(Subset { inner, indices })
    }

    /// The index in the inner dataset of each sample.
    pub fn indices(&self) -> &[usize] {
        &self.indices
    }
}

impl Dataset for Subset {
    fn len(&self) -> usize {
        self.indices.len()
    }
    fn image_size(&self) -> usize {
        self.inner.image_size()
    }
    fn channels(&self) -> usize {
        self.inner.channels()
    }
    fn holds_posterior(&self) -> bool {
        self.inner.holds_posterior()
    }
    fn class_names(&self) -> &[String] {
        self.inner.class_names()
    }
    fn get_into(&self, index: usize, flip: bool, out: &mut [f32]) -> Result<i64, DataError> {
        self.get_into_noting_bad(index, flip, out, &mut Vec::new())
    }
    fn get_into_noting_bad(&self, index: usize, flip: bool, out: &mut [f32], bad: &mut Vec<BadImage>) -> Result<i64, DataError> {
        let i = *self.indices.get(index).ok_or_else(|| {
            DataError::Config(format!("index {index} out of range for a subset of {} samples", self.indices.len()))
        })?;
        self.inner.get_into_noting_bad(i, flip, out, bad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Builtin;

    #[test]
    fn held_out_indices_are_distinct_sorted_seeded_and_spread() {
        let a = held_out_indices(1000, 250, 7);
        assert_eq!(a.len(), 250);
        assert!(a.windows(2).all(|w| w[0] < w[1]) && *a.last().unwrap() < 1000);
        assert_eq!(a, held_out_indices(1000, 250, 7));
        assert_ne!(a, held_out_indices(1000, 250, 8));
        // A uniform sample: about a quarter of each quarter of the range.
        for q in 0..4 {
            let n = a.iter().filter(|&&i| i / 250 == q).count();
            assert!((40..=85).contains(&n), "quarter {q}: {n}");
        }
        assert_eq!(held_out_indices(5, 9, 0), vec![0, 1, 2, 3, 4]);
        let rest = complement(1000, &a);
        assert_eq!(rest.len(), 750);
        assert!(rest.iter().all(|i| a.binary_search(i).is_err()));
    }

    #[test]
    fn a_subset_serves_the_inner_samples_it_names() {
        let inner: Arc<dyn Dataset> = Arc::new(Builtin::new(8, 20, 3).unwrap());
        let s = Subset::new(inner.clone(), vec![2, 5, 19]).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s.get(1, true).unwrap(), inner.get(5, true).unwrap());
        assert_eq!(s.get(2, false).unwrap(), inner.get(19, false).unwrap());
        assert!(s.get(3, false).is_err());
        assert!(Subset::new(inner.clone(), vec![20]).is_err());
        assert!(Subset::new(inner, vec![]).is_err());
    }
}
