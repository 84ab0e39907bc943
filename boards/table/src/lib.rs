//! The board tables: every device, RAM bank, reserved range and guest partition of
//! a machine, declared in `const`s and checked at compile time.
//!
//! A board crate fills in a [`Board`] and invokes [`check_board!`]; `cargo build`
//! then refuses a table that would let a guest see a byte it was not given (see
//! `boards/README.md` for the rules and their messages). The same [`validate`]
//! checks tables built at run time.
//!
//! For each grant the table also decides, at compile time, whether the device's
//! granule-rounded span maps directly ([`Mapping::Direct`]: every byte of the span
//! is the partition's or declared unused) or is trapped and forwarded
//! ([`Mapping::Trapped`]).

#![no_std]
#![forbid(unsafe_code)]

#[cfg(test)]
extern crate std;

/// Defines a type's `label()`, how it is written in messages and logs, from one
/// table of patterns and texts; with the `defmt` feature, also its
/// `defmt::Format`, which sends the same text as a defmt format string: interned
/// at build time, two bytes on the wire instead of the text and its length.
macro_rules! labels {
    (
        $(#[$doc:meta])*
        $ty:ty, |$value:ident| $scrutinee:expr, { $($pattern:pat => $text:literal,)* }
    ) => {
        impl $ty {
            $(#[$doc])*
            pub const fn label(self) -> &'static str {
                let $value = self;
                match $scrutinee {
                    $($pattern => $text,)*
                }
            }
        }

        #[cfg(feature = "defmt")]
        impl defmt::Format for $ty {
            fn format(&self, f: defmt::Formatter<'_>) {
                let $value = *self;
                match $scrutinee {
                    $($pattern => defmt::write!(f, $text),)*
                }
            }
        }
    };
}

mod board;
mod range;
mod region;
mod text;
mod validate;

pub use board::{
    Board, Console, ForeignByte, Grant, GrantMode, Hypervisor, Mapping, Partition, SecondaryBoot,
    UartKind,
};
pub use range::{Granule, PHYS_ADDRESS_LIMIT, PhysRange};
pub use region::{
    Access, AccessWidths, DeviceKind, IntId, Interrupts, MAX_REGION_INTERRUPTS, MemoryAttributes,
    Region, Reserved, ReservedReason, Unused,
};
pub use text::{MESSAGE_CAPACITY, Message, same_str};
pub use validate::{BoardError, Item, ItemKind, Violation, validate};
