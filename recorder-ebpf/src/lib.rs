//! Host-side placeholder so that `recorder` can name this crate as a build-dependency; the
//! programs themselves are the `recorder` binary target, built only for the bpf target.
#![no_std]
