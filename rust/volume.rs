//! A read-only view of a volume's `.idx`/`.dat`. (Being written.)
