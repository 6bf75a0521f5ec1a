//! Bypass corpus (filled below).
