// Rolldown settings merged into `jco componentize --bundle` by build.sh: the WIT imports
// are the component's, not modules to find on disk.
export default { external: [/^tollgate:policy\//] };
