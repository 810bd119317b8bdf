//! commander (in progress)
