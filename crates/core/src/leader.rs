//! leader (in progress)
