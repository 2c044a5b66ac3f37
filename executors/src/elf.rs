//! A check of the ELF header before a library goes to the dynamic loader, so that "not a library"
//! and "wrong architecture" get clear errors (`dlopen` says "invalid ELF header" or, for another
//! machine, often just "cannot open shared object file").

/// Bytes of the header read: `e_ident` (16), `e_type` (2), `e_machine` (2).
pub(crate) const HEADER_LEN: usize = 20;

/// What is wrong with a header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HeaderProblem {
    /// Not an ELF shared object at all.
    NotSharedLibrary(String),
    /// An ELF shared object for something other than this process.
    WrongArchitecture(String),
}

const ET_REL: u16 = 1;
const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;
const ET_CORE: u16 = 4;

#[cfg(target_pointer_width = "64")]
const HOST_CLASS: u8 = 2;
#[cfg(target_pointer_width = "32")]
const HOST_CLASS: u8 = 1;

#[cfg(target_endian = "little")]
const HOST_DATA: u8 = 1;
#[cfg(target_endian = "big")]
const HOST_DATA: u8 = 2;

/// `e_machine` of this process, where known (otherwise the machine is not checked).
const HOST_MACHINE: Option<u16> = if cfg!(target_arch = "x86_64") {
    Some(62)
} else if cfg!(target_arch = "aarch64") {
    Some(183)
} else if cfg!(target_arch = "x86") {
    Some(3)
} else if cfg!(target_arch = "arm") {
    Some(40)
} else if cfg!(target_arch = "riscv64") || cfg!(target_arch = "riscv32") {
    Some(243)
} else if cfg!(target_arch = "powerpc64") {
    Some(21)
} else if cfg!(target_arch = "powerpc") {
    Some(20)
} else if cfg!(target_arch = "s390x") {
    Some(22)
} else if cfg!(target_arch = "loongarch64") {
    Some(258)
} else {
    None
};

/// This process's architecture, for messages.
pub(crate) const HOST: &str = std::env::consts::ARCH;

fn machine_name(machine: u16) -> &'static str {
    match machine {
        3 => "x86",
        8 => "mips",
        20 => "powerpc",
        21 => "powerpc64",
        22 => "s390x",
        40 => "arm",
        62 => "x86_64",
        183 => "aarch64",
        243 => "riscv",
        258 => "loongarch",
        _ => "an unknown machine",
    }
}

fn class_name(class: u8) -> &'static str {
    match class {
        1 => "32-bit",
        2 => "64-bit",
        _ => "unknown word size",
    }
}

fn data_name(data: u8) -> &'static str {
    match data {
        1 => "little-endian",
        2 => "big-endian",
        _ => "unknown byte order",
    }
}

/// Checks that `head` (the first bytes of a file, at least [`HEADER_LEN`] if the file is that
/// long) starts an ELF shared object for this process.
pub(crate) fn check_header(head: &[u8]) -> Result<(), HeaderProblem> {
    let not_lib = |why: String| Err(HeaderProblem::NotSharedLibrary(why));
    if head.get(..4) != Some(b"\x7fELF".as_slice()) {
        return if head.len() < 4 {
            not_lib(format!("file too short ({} bytes)", head.len()))
        } else {
            not_lib("no elf magic".to_owned())
        };
    }
    let Some(h) = head.get(..HEADER_LEN) else {
        return not_lib(format!("truncated elf header ({} bytes)", head.len()));
    };
    let (class, data) = (h[4], h[5]);
    if class != HOST_CLASS || data != HOST_DATA {
        return Err(HeaderProblem::WrongArchitecture(format!(
            "{} {} elf",
            class_name(class),
            data_name(data)
        )));
    }
    let field = |at: usize| {
        let b = [h[at], h[at + 1]];
        if data == 1 {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        }
    };
    match field(16) {
        ET_DYN => {}
        ET_REL => return not_lib("it is a relocatable object file (.o)".to_owned()),
        ET_EXEC => return not_lib("it is an executable".to_owned()),
        ET_CORE => return not_lib("it is a core dump".to_owned()),
        other => return not_lib(format!("unknown elf type {other}")),
    }
    let machine = field(18);
    match HOST_MACHINE {
        Some(host) if host != machine => Err(HeaderProblem::WrongArchitecture(format!(
            "{} (e_machine {machine})",
            machine_name(machine)
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(class: u8, data: u8, e_type: u16, machine: u16) -> Vec<u8> {
        let mut h = b"\x7fELF".to_vec();
        h.extend([class, data, 1, 0]);
        h.resize(16, 0);
        h.extend(e_type.to_le_bytes());
        h.extend(machine.to_le_bytes());
        h.resize(64, 0);
        h
    }

    fn host_machine() -> u16 {
        HOST_MACHINE.unwrap_or(62)
    }

    #[test]
    fn accepts_a_host_shared_object() {
        let h = header(HOST_CLASS, HOST_DATA, ET_DYN, host_machine());
        assert_eq!(check_header(&h), Ok(()));
    }

    #[test]
    fn rejects_non_elf_and_non_libraries() {
        for (bytes, want) in [
            (&b""[..], "file too short (0 bytes)"),
            (&b"\x7fEL"[..], "file too short (3 bytes)"),
            (&b"#!/bin/sh\necho hi\n"[..], "no elf magic"),
            (&b"\x7fELF\x02\x01"[..], "truncated elf header (6 bytes)"),
        ] {
            assert_eq!(
                check_header(bytes),
                Err(HeaderProblem::NotSharedLibrary(want.to_owned()))
            );
        }
        let exe = header(HOST_CLASS, HOST_DATA, ET_EXEC, host_machine());
        assert!(
            matches!(check_header(&exe), Err(HeaderProblem::NotSharedLibrary(w)) if w.contains("executable"))
        );
        let obj = header(HOST_CLASS, HOST_DATA, ET_REL, host_machine());
        assert!(
            matches!(check_header(&obj), Err(HeaderProblem::NotSharedLibrary(w)) if w.contains(".o"))
        );
    }

    #[test]
    #[cfg(all(target_endian = "little", target_pointer_width = "64"))]
    fn rejects_other_architectures() {
        let other = if host_machine() == 183 { 62 } else { 183 };
        let h = header(HOST_CLASS, HOST_DATA, ET_DYN, other);
        let Err(HeaderProblem::WrongArchitecture(found)) = check_header(&h) else {
            panic!("accepted e_machine {other}");
        };
        assert!(found.contains(&format!("e_machine {other}")), "{found}");
        let h32 = header(1, HOST_DATA, ET_DYN, host_machine());
        assert_eq!(
            check_header(&h32),
            Err(HeaderProblem::WrongArchitecture(
                "32-bit little-endian elf".to_owned()
            ))
        );
    }
}
