//! Chunk-to-needle planner. (Being written.)
