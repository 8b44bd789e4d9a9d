//! Checking an uploaded policy before it is stored: size, component (not core module),
//! compiles, imports within the `policy` world plus the WASI that Rust's std needs, and
//! the right exports. Every failure says what is wrong.

use wasmtime::component::Component;
use wasmtime::Engine;

use super::limits::{PolicyLimits, MAX_MEMORIES_PER_COMPONENT, MAX_TABLES_PER_COMPONENT};

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
    /// Past a complexity limit counted before compiling (a compile bomb, or a policy far
    /// larger than routing logic needs).
    #[error("policy {what} {found}; the limit is {limit} ({setting})")]
    TooComplex {
        /// What was counted, e.g. `defines functions:`.
        what: &'static str,
        /// How many.
        found: usize,
        /// The limit.
        limit: usize,
        /// The config field that sets the limit, or why it is fixed.
        setting: &'static str,
    },
    /// Exports do not match the `policy` world.
    #[error("policy does not implement the tollgate:policy@0.2.0 world (nor 0.1.0): {0}")]
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

/// Counts what makes compiling expensive, with a parse that does no validation or
/// compilation (milliseconds for a few MB): functions, each function's locals and body
/// size, and memories and tables, across every core module in the component.
pub fn check_complexity(wasm: &[u8], limits: &PolicyLimits) -> Result<(), UploadError> {
    use wasmparser::{Parser, Payload};
    let too_complex = |what, found, limit, setting| UploadError::TooComplex { what, found, limit, setting };
    let malformed = |e: wasmparser::BinaryReaderError| UploadError::Compile(e.to_string());
    let (mut functions, mut memories, mut tables) = (0usize, 0usize, 0usize);
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.map_err(malformed)? {
            Payload::FunctionSection(section) => {
                functions = functions.saturating_add(section.count() as usize);
                if functions > limits.max_functions {
                    return Err(too_complex("defines functions:", functions, limits.max_functions, "policy.max_functions"));
                }
            }
            Payload::CodeSectionEntry(body) => {
                let size = body.range().len();
                if size > limits.max_function_body_bytes {
                    return Err(too_complex("has a function body of bytes:", size, limits.max_function_body_bytes, "policy.max_function_body_bytes"));
                }
                let mut locals = 0usize;
                for group in body.get_locals_reader().map_err(malformed)? {
                    let (count, _) = group.map_err(malformed)?;
                    locals = locals.saturating_add(count as usize);
                    if locals > limits.max_function_locals {
                        return Err(too_complex("has a function with locals:", locals, limits.max_function_locals, "policy.max_function_locals"));
                    }
                }
            }
            Payload::MemorySection(section) => memories = memories.saturating_add(section.count() as usize),
            Payload::TableSection(section) => tables = tables.saturating_add(section.count() as usize),
            _ => {}
        }
    }
    if memories > MAX_MEMORIES_PER_COMPONENT as usize {
        return Err(too_complex("defines memories:", memories, MAX_MEMORIES_PER_COMPONENT as usize, "fixed: the sandbox pool's slots hold that many"));
    }
    if tables > MAX_TABLES_PER_COMPONENT as usize {
        return Err(too_complex("defines tables:", tables, MAX_TABLES_PER_COMPONENT as usize, "fixed: the sandbox pool's slots hold that many"));
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
