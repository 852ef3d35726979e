//! The on-disk needle record. (Being written.)
