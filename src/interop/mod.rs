//! Plumbing shared by every adapter that talks to Python: state guarded by the GIL, cached
//! Python objects, OS errors as Python exceptions, reused `bytes`, and asyncio's check of
//! callbacks.
//!
//! - [`gil_cell`]: interior mutability for state that only changes with the GIL held;
//! - [`py_cache`]: asyncio's types, helpers and interned names, looked up once;
//! - [`errors`]: `errno` values as the `OSError` subclasses asyncio raises;
//! - [`spare_bytes`]: reuse of the `bytes` a protocol let go of (per thread, released when the
//!   loop stops running);
//! - [`read_bytes`]: large reads of a known size straight into a new `bytes` (no copy);
//! - [`callback_check`]: the TypeError asyncio raises for coroutines and non-callables;
//! - [`lazy_dict`]: instance dicts of native objects created only when first used;
//! - [`context_reuse`]: `contextvars.Context` objects of recycled handles reused for the next
//!   copy of the current context, and handles without one keeping only the current mapping
//!   until they run (layout checked when the module loads);
//! - [`context_switch`]: entering and leaving a callback's context without the C API's calls
//!   (3.11–3.13, same layout checks);
//! - [`step_untrack`]: the C task's step callbacks kept out of the collector's lists while a
//!   ready handle holds them.

pub mod callback_check;
pub mod context_reuse;
pub mod context_switch;
pub mod errors;
pub mod gil_cell;
pub mod lazy_dict;
pub mod py_cache;
pub mod read_bytes;
pub mod spare_bytes;
pub mod step_untrack;
