//! Sampling the workload's laws: a seeded [`Rng`](crate::rng::Rng) and Zipf tables over it.

use crate::rng::Rng;

/// Walker/Vose alias table: O(1) sampling from a discrete distribution.
#[derive(Clone, Debug)]
pub(super) struct Alias {
    prob: Vec<u32>,
    alias: Vec<u32>,
}

impl Alias {
    /// A Zipf law of exponent `s` over ranks `0..n`.
    pub(super) fn zipf(n: u32, s: f64) -> Alias {
        let weights: Vec<f64> = (1..=n).map(|k| f64::from(k).powf(-s)).collect();
        Alias::new(&weights)
    }

    fn new(weights: &[f64]) -> Alias {
        let n = weights.len();
        let total: f64 = weights.iter().sum();
        let mut scaled: Vec<f64> = weights.iter().map(|w| w * n as f64 / total).collect();
        let mut prob = vec![u32::MAX; n];
        let mut alias: Vec<u32> = (0..n as u32).collect();
        let (mut small, mut large): (Vec<usize>, Vec<usize>) =
            (0..n).partition(|&i| scaled[i] < 1.0);
        while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
            prob[s] = (scaled[s] * f64::from(u32::MAX)) as u32;
            alias[s] = l as u32;
            scaled[l] -= 1.0 - scaled[s];
            if scaled[l] < 1.0 {
                large.pop();
                small.push(l);
            }
        }
        Alias { prob, alias }
    }

    pub(super) fn sample(&self, rng: &mut Rng) -> u32 {
        let r = rng.next_u64();
        let i = (((r >> 32) * self.prob.len() as u64) >> 32) as usize;
        if (r as u32) < self.prob[i] { i as u32 } else { self.alias[i] }
    }
}
