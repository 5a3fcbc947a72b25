//! SPI allocation by the receiver: random, never 0-255, unique among the SPIs this node has in
//! use. The agent reserves the SPIs it finds in the kernel on start and releases an SPI when it
//! deletes the SA; the key exchange allocates for every new inbound SA.

use std::collections::HashSet;

use cipherlane_core::Spi;
use ring::rand::SecureRandom;

/// The SPI space is exhausted or the random source failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("could not allocate an SPI: {0}")]
pub struct SpiExhausted(&'static str);

/// The SPIs in use on this node.
#[derive(Debug, Default)]
pub struct SpiAllocator {
    in_use: HashSet<Spi>,
}

impl SpiAllocator {
    pub fn new() -> SpiAllocator {
        SpiAllocator::default()
    }

    /// Marks an SPI as taken (an SA adopted from the kernel); returns false if it already was.
    pub fn reserve(&mut self, spi: Spi) -> bool {
        self.in_use.insert(spi)
    }

    /// Frees an SPI once its SA is deleted.
    pub fn release(&mut self, spi: Spi) {
        self.in_use.remove(&spi);
    }

    pub fn in_use(&self, spi: Spi) -> bool {
        self.in_use.contains(&spi)
    }

    pub fn len(&self) -> usize {
        self.in_use.len()
    }

    pub fn is_empty(&self) -> bool {
        self.in_use.is_empty()
    }

    /// Draws a random unused SPI ≥ 256 and marks it in use.
    pub fn allocate(&mut self, rng: &dyn SecureRandom) -> Result<Spi, SpiExhausted> {
        for _ in 0..64 {
            let mut raw = [0u8; 4];
            rng.fill(&mut raw)
                .map_err(|_| SpiExhausted("the random source failed"))?;
            if let Ok(spi) = Spi::new(u32::from_be_bytes(raw)) {
                if self.in_use.insert(spi) {
                    return Ok(spi);
                }
            }
        }
        Err(SpiExhausted("64 random draws all collided"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;

    #[test]
    fn allocated_spis_are_unique_and_never_reserved_values() {
        let rng = SystemRandom::new();
        let mut spis = SpiAllocator::new();
        let mut seen = HashSet::new();
        for _ in 0..10_000 {
            let spi = spis.allocate(&rng).expect("space is huge");
            assert!(spi.value() > 255);
            assert!(seen.insert(spi), "duplicate {spi}");
        }
        assert_eq!(spis.len(), 10_000);
    }

    #[test]
    #[allow(deprecated)]
    fn a_reserved_spi_is_not_handed_out_again_until_released() {
        let fixed = ring::test::rand::FixedSliceRandom {
            bytes: &[0, 0, 0x10, 0],
        };
        let mut spis = SpiAllocator::new();
        assert!(spis.reserve(Spi::new(0x1000).expect("valid")));
        assert!(spis.allocate(&fixed).is_err());
        spis.release(Spi::new(0x1000).expect("valid"));
        assert_eq!(spis.allocate(&fixed).map(Spi::value), Ok(0x1000));
    }
}
