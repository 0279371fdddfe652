#!/usr/bin/env python3
"""Writes src/protobuf/schema.rs: the protobuf field numbers, JSON names and JSON rules of the
built-in kinds, read from the Go types of Kubernetes (their `json` and `protobuf` struct tags).

    python3 scripts/gen-protobuf-schema.py K8S_API_DIR APIMACHINERY_DIR > src/protobuf/schema.rs
    rustfmt --edition 2024 src/protobuf/schema.rs

K8S_API_DIR is a checkout of k8s.io/api, APIMACHINERY_DIR one of k8s.io/apimachinery (the
versions of the Kubernetes release /version reports).
"""

import os
import re
import sys

# package key -> (directory under its root, apiVersion of its kinds or None)
API_PACKAGES = {
    "core_v1": ("core/v1", "v1"),
    "apps_v1": ("apps/v1", "apps/v1"),
    "batch_v1": ("batch/v1", "batch/v1"),
    "rbac_v1": ("rbac/v1", "rbac.authorization.k8s.io/v1"),
    "authorization_v1": ("authorization/v1", "authorization.k8s.io/v1"),
    "authentication_v1": ("authentication/v1", "authentication.k8s.io/v1"),
    "networking_v1": ("networking/v1", "networking.k8s.io/v1"),
    "policy_v1": ("policy/v1", "policy/v1"),
    "autoscaling_v1": ("autoscaling/v1", "autoscaling/v1"),
    "autoscaling_v2": ("autoscaling/v2", "autoscaling/v2"),
    "scheduling_v1": ("scheduling/v1", "scheduling.k8s.io/v1"),
    "coordination_v1": ("coordination/v1", "coordination.k8s.io/v1"),
}
MACHINERY_PACKAGES = {
    "meta_v1": "pkg/apis/meta/v1",
    "resource": "pkg/api/resource",
    "intstr": "pkg/util/intstr",
    "runtime": "pkg/runtime",
}
IMPORT_PATHS = {f"k8s.io/api/{d}": k for k, (d, _) in API_PACKAGES.items()}
IMPORT_PATHS.update({f"k8s.io/apimachinery/{d}": k for k, d in MACHINERY_PACKAGES.items()})
IMPORT_PATHS["k8s.io/apimachinery/pkg/types"] = "types"

# Types with their own JSON form.
SPECIAL = {
    ("meta_v1", "Time"): "Time",
    ("meta_v1", "MicroTime"): "MicroTime",
    ("meta_v1", "FieldsV1"): "Raw",
    ("resource", "Quantity"): "Quantity",
    ("intstr", "IntOrString"): "IntOrString",
    ("runtime", "RawExtension"): "Raw",
}
SCALARS = {
    "string": "Str",
    "bool": "Bool",
    "int32": "Int",
    "int64": "Int",
    "int": "Int",
    "uint32": "Int",
    "uint64": "Int",
}

top_level = set()  # (package, struct) of the structs that carry apiVersion and kind
FIELD = re.compile(r"^\s*(\w+\s+)?([^\s`]+)\s+`([^`]*)`")
TAG = re.compile(r'(\w+):"([^"]*)"')


def parse_package(root, key):
    """Structs (name -> [fields]) and named types (name -> Go type) of one package."""
    structs, named = {}, {}
    for name in sorted(os.listdir(root)):
        if not name.endswith(".go") or name.endswith("_test.go"):
            continue
        text = open(os.path.join(root, name)).read()
        imports = {}
        for alias, path in re.findall(r'^\s*(\w+)?\s*"(k8s\.io/[^"]+)"', text, re.M):
            imports[alias or path.rsplit("/", 1)[1]] = IMPORT_PATHS.get(path, path)
        lines = text.split("\n")
        i = 0
        while i < len(lines):
            m = re.match(r"^type (\w+) struct \{", lines[i])
            if m:
                fields = []
                i += 1
                while not lines[i].startswith("}"):
                    if re.match(r"^\s*metav1\.TypeMeta\s", lines[i]):
                        top_level.add((key, m.group(1)))
                    f = FIELD.match(lines[i])
                    if f and not lines[i].strip().startswith("//"):
                        tags = dict(TAG.findall(f.group(3)))
                        if "protobuf" in tags:
                            fields.append((f.group(1), f.group(2), tags, imports))
                    i += 1
                structs[m.group(1)] = fields
            else:
                m = re.match(r"^type (\w+) ([\w.\[\]*]+)\s*$", lines[i])
                if m:
                    named[m.group(1)] = (m.group(2), imports)
            i += 1
    return structs, named


def main():
    api_root, machinery_root = sys.argv[1], sys.argv[2]
    packages = {}
    for key, (d, _) in API_PACKAGES.items():
        packages[key] = parse_package(os.path.join(api_root, d), key)
    for key, d in MACHINERY_PACKAGES.items():
        packages[key] = parse_package(os.path.join(machinery_root, d), key)
    packages["types"] = ({}, {"UID": ("string", {}), "NodeName": ("string", {})})

    needed = []  # (pkg, struct) in the order first reached
    seen = set()

    def resolve(pkg, go_type, imports):
        """The Rust `Ty` expression of a Go type (without pointer, slice or map)."""
        if go_type in SCALARS:
            return SCALARS[go_type]
        if "." in go_type:
            alias, name = go_type.split(".", 1)
            pkg = imports[alias]
            go_type = name
        if (pkg, go_type) in SPECIAL:
            return SPECIAL[(pkg, go_type)]
        structs, named = packages[pkg]
        if go_type in structs:
            if (pkg, go_type) not in seen:
                seen.add((pkg, go_type))
                needed.append((pkg, go_type))
            return f"Ty::Msg(&super::{pkg}::{go_type})"
        if go_type in named:
            base, imps = named[go_type]
            if base.startswith("[]") and base != "[]byte":
                # A named list as a map value is a message with `items`.
                inner = ty_expr(pkg, base[2:], imps)
                return f"Ty::List(&{inner})"
            if base.startswith("map["):
                return ty_expr(pkg, base, imps)
            return resolve(pkg, base, imps)
        raise SystemExit(f"unknown type {pkg}.{go_type}")

    def ty_expr(pkg, go_type, imports):
        t = resolve(pkg, go_type.lstrip("*"), imports)
        return t if t.startswith("Ty::") else f"Ty::{t}"

    def field(pkg, name, go_type, tags, imports):
        json_name, *opts = tags.get("json", "").split(",")
        wire = tags["protobuf"].split(",")
        number = int(wire[1])
        inline = "inline" in opts
        omitempty = "omitempty" in opts
        pointer = go_type.startswith("*")
        t = go_type.lstrip("*")
        if inline:
            card = "Card::Inline"
        elif t == "[]byte":
            card = "Card::One"
        elif t.startswith("[]"):
            card, t = "Card::Rep", t[2:]
        elif t.startswith("map["):
            card, t = "Card::Map", t.split("]", 1)[1]
        else:
            npkg, nname = pkg, t
            if "." in t:
                alias, nname = t.split(".", 1)
                npkg = imports.get(alias, alias)
            named = packages.get(npkg, ({}, {}))[1].get(nname)
            card = "Card::One"
            if named and named[0].startswith("map["):
                card, t, imports, pkg = "Card::Map", named[0].split("]", 1)[1], named[1], npkg
            elif named and named[0].startswith("[]") and named[0] != "[]byte":
                card, t, imports, pkg = "Card::Rep", named[0][2:], named[1], npkg
        ty = "Ty::Bytes" if t == "[]byte" else ty_expr(pkg, t, imports)
        keep = "true" if (pointer or not omitempty) else "false"
        return f'f({number}, "{json_name}", {ty}, {card}, {keep})'

    kinds = []
    for key, (_, api_version) in API_PACKAGES.items():
        structs, _ = packages[key]
        for name in sorted(structs):
            if (key, name) in top_level and not name.endswith(("List", "Options")):
                resolve(key, name, {})
                kinds.append((api_version, name, key))

    out = {}
    i = 0
    while i < len(needed):
        pkg, name = needed[i]
        i += 1
        fields = []
        for fname, go_type, tags, imports in packages[pkg][0][name]:
            fields.append(field(pkg, fname, go_type, tags, imports))
        out.setdefault(pkg, []).append((name, fields))

    print("// @generated by scripts/gen-protobuf-schema.py from the Go types of k8s.io/api and")
    print("// k8s.io/apimachinery. Do not edit.")
    print("//! Field numbers, JSON names and JSON rules of the built-in kinds' protobuf messages.")
    print()
    print("use super::{Card, Msg, Ty, f};")
    print()
    print("/// The kinds whose protobuf bodies are read: (apiVersion, kind, message).")
    print("pub static KINDS: &[(&str, &str, &Msg)] = &[")
    for api_version, name, key in kinds:
        print(f'    ("{api_version}", "{name}", &{key}::{name}),')
    print("];")
    for pkg in sorted(out):
        print()
        print("#[allow(non_upper_case_globals)]")
        print(f"pub mod {pkg} {{")
        print("    use super::*;")
        for name, fields in sorted(out[pkg]):
            print(f'    pub static {name}: Msg = Msg {{ name: "{name}", fields: &[')
            for fl in fields:
                print(f"        {fl},")
            print("    ]};")
        print("}")


main()
