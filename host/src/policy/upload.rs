//! Checking an uploaded policy before it is stored: size, component (not core module),
//! compiles, imports within the `policy` world plus the WASI that Rust's std needs, and
//! the right exports. Every failure says what is wrong.

use wasmtime::component::Component;
use wasmtime::Engine;

/// Why an upload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UploadError {
    /// Larger than `policy.upload_bytes`.
    #[error("policy is {size} bytes; the limit is {limit}")]
    TooLarge {
        /// Upload size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Not WebAssembly at all.
    #[error("not a WebAssembly binary (missing the \\0asm header)")]
    NotWasm,
    /// A core module, not a component.
    #[error("this is a core WebAssembly module, not a component; build the policy with `--target wasm32-wasip2`")]
    CoreModule,
    /// Validation or compilation failed.
    #[error("policy does not compile: {0}")]
    Compile(String),
    /// An import outside the allowed world.
    #[error("policy imports '{0}', which policies may not use (allowed: tollgate:policy/*, and the wasi:cli, io, clocks, random, filesystem interfaces Rust's std links)")]
    ForbiddenImport(String),
    /// Exports do not match the `policy` world.
    #[error("policy does not implement the tollgate:policy@0.1.0 world: {0}")]
    WrongWorld(String),
}

const WASM_MAGIC: &[u8; 4] = b"\0asm";
/// Bytes 4..8 of a core module (version 1); components carry version 0x0d and layer 1.
const CORE_MODULE_VERSION: [u8; 4] = [1, 0, 0, 0];

/// Interfaces a policy may import. WASI is listed because `wasm32-wasip2` std imports it;
/// the host links it on a context that grants nothing. Sockets and HTTP are absent.
const ALLOWED_IMPORT_PREFIXES: &[&str] = &[
    "tollgate:policy/",
    "wasi:cli/",
    "wasi:io/",
    "wasi:clocks/",
    "wasi:random/",
    "wasi:filesystem/",
];

/// Cheap checks on the raw bytes, before any compilation.
pub fn check_bytes(wasm: &[u8], limit: usize) -> Result<(), UploadError> {
    if wasm.len() > limit {
        return Err(UploadError::TooLarge { size: wasm.len(), limit });
    }
    if wasm.len() < 8 || &wasm[..4] != WASM_MAGIC {
        return Err(UploadError::NotWasm);
    }
    if wasm[4..8] == CORE_MODULE_VERSION {
        return Err(UploadError::CoreModule);
    }
    Ok(())
}

/// Compiles the component and checks its imports. Slow (Cranelift): call it off the
/// request path.
pub fn compile(engine: &Engine, wasm: &[u8]) -> Result<Component, UploadError> {
    let component = Component::new(engine, wasm).map_err(|e| UploadError::Compile(format!("{e:#}")))?;
    for (name, _) in component.component_type().imports(engine) {
        if !ALLOWED_IMPORT_PREFIXES.iter().any(|p| name.starts_with(p)) {
            return Err(UploadError::ForbiddenImport(name.to_string()));
        }
    }
    Ok(component)
}
