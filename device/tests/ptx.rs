//! The kernels' PTX assembles with NVIDIA's `ptxas` for the GPUs rfx
//! targets (Volta, Ampere, Hopper): rfx-device's reductions and the SAXPY
//! kernel of `examples/c/gpu_functions.c`. `ptxas` comes from the
//! `nvidia-cuda-nvcc-cu12` wheel (scripts/test.sh installs it into a venv);
//! `RFX_PTXAS` names it, else it is looked up on `PATH`.
//! Skip with `RFX_TEST_SKIP_PTXAS=1` where it cannot be had.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::Command;

fn ptxas() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("RFX_PTXAS") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("ptxas"))
        .find(|p| p.is_file())
}

/// Assembles `text` for each architecture; returns the cubins' text.
fn assemble(name: &str, text: &str) -> Option<Vec<String>> {
    if std::env::var_os("RFX_TEST_SKIP_PTXAS").is_some() {
        eprintln!("skipped: RFX_TEST_SKIP_PTXAS is set");
        return None;
    }
    let ptxas = ptxas().expect(
        "no ptxas: set RFX_PTXAS (pip install nvidia-cuda-nvcc-cu12 has one) or RFX_TEST_SKIP_PTXAS=1",
    );
    let dir = std::env::temp_dir().join(format!("rfx-ptx-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join(format!("{name}.ptx"));
    std::fs::write(&src, text).unwrap();
    let mut cubins = Vec::new();
    for arch in ["sm_70", "sm_80", "sm_90"] {
        let cubin = dir.join(format!("{arch}.cubin"));
        let out = Command::new(&ptxas)
            .args(["--gpu-name", arch, "--warn-on-spills", "-o"])
            .arg(&cubin)
            .arg(&src)
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", ptxas.display()));
        assert!(
            out.status.success(),
            "ptxas {arch} failed on {name}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bytes = std::fs::read(&cubin).unwrap();
        // An ELF object.
        assert_eq!(&bytes[..4], b"\x7fELF");
        cubins.push(String::from_utf8_lossy(&bytes).into_owned());
    }
    std::fs::remove_dir_all(&dir).ok();
    Some(cubins)
}

#[test]
fn the_reduction_kernels_assemble_for_volta_ampere_and_hopper() {
    let Some(cubins) = assemble("kernels", &rfx_device::kernels::ptx()) else {
        return;
    };
    for c in cubins {
        assert!(c.contains("rfx_reduce_max_u8") && c.contains("rfx_saxpy_f32"));
    }
}

/// The PTX between `/* PTX BEGIN */` and `/* PTX END */` of a C file, as
/// the compiler would make it of its string literals.
fn ptx_of_c(path: &Path) -> String {
    let c = std::fs::read_to_string(path).unwrap();
    let body = c
        .split("/* PTX BEGIN */")
        .nth(1)
        .and_then(|s| s.split("/* PTX END */").next())
        .expect("PTX markers");
    body.lines()
        .filter_map(|l| {
            let (a, b) = (l.find('"')?, l.rfind('"')?);
            (b > a).then(|| l[a + 1..b].replace("\\n", "\n"))
        })
        .collect()
}

#[test]
fn the_gpu_function_example_kernel_assembles() {
    let c = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/c/gpu_functions.c");
    let text = ptx_of_c(&c);
    assert!(text.starts_with(".version") && text.contains(".entry saxpy("));
    if let Some(cubins) = assemble("gpu_functions", &text) {
        assert!(cubins.iter().all(|c| c.contains("saxpy")));
    }
}
