//! `POST /v1/graphql`: the part of Attentive's (beta) GraphQL API that looks users up.
//!
//! The schema served is a small slice of Attentive's:
//!
//! ```graphql
//! type Query { viewer: Viewer }
//! type Viewer { installedApplication: InstalledApplication }
//! type InstalledApplication { name: String! installerCompany: Company }
//! type Company { id: ID! name: String! user(email: String, phone: String): User }
//! type User { id: ID! email: String! subscribedPhone: String! firstName: String! lastName: String! }
//! ```
//!
//! Queries are parsed with `graphql-parser`, validated against that schema (unknown fields,
//! arguments, variables, fragments), limited in the number of `user` fields, then executed
//! with GraphQL's null rules: a non-null field without a value makes its `user` null and
//! adds an error with the field's path. Every answer is HTTP 200 with `data` and/or
//! `errors`, as GraphQL servers answer.

use std::collections::HashMap;

use graphql_parser::query::{
    self as q, Definition, OperationDefinition, Selection, SelectionSet, TypeCondition,
};
use graphql_parser::Pos;
use serde_json::{json, Map, Value};

use crate::config::CompanyInfo;
use crate::model::Contact;
use crate::state::State;
use crate::validate;

type Field<'q> = q::Field<'q, &'q str>;
type Set<'q> = SelectionSet<'q, &'q str>;
type GValue<'q> = q::Value<'q, &'q str>;
type VarDef<'q> = q::VariableDefinition<'q, &'q str>;
type Fragment<'q> = q::FragmentDefinition<'q, &'q str>;

/// The object types of the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    Query,
    Viewer,
    App,
    Company,
    User,
}

/// What a field of an object type returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Out {
    Object(Ty),
    /// A non-null scalar (`String!` or `ID!`).
    Scalar,
}

impl Ty {
    fn name(self) -> &'static str {
        match self {
            Ty::Query => "Query",
            Ty::Viewer => "Viewer",
            Ty::App => "InstalledApplication",
            Ty::Company => "Company",
            Ty::User => "User",
        }
    }

    fn field(self, name: &str) -> Option<Out> {
        if name == "__typename" {
            return Some(Out::Scalar);
        }
        Some(match (self, name) {
            (Ty::Query, "viewer") => Out::Object(Ty::Viewer),
            (Ty::Viewer, "installedApplication") => Out::Object(Ty::App),
            (Ty::App, "installerCompany") => Out::Object(Ty::Company),
            (Ty::Company, "user") => Out::Object(Ty::User),
            (Ty::App, "name")
            | (Ty::Company, "id" | "name")
            | (Ty::User, "id" | "email" | "subscribedPhone" | "firstName" | "lastName") => {
                Out::Scalar
            }
            _ => return None,
        })
    }

    /// The arguments a field takes (all `String`, all optional).
    fn arguments(self, field: &str) -> &'static [&'static str] {
        match (self, field) {
            (Ty::Company, "user") => &["email", "phone"],
            _ => &[],
        }
    }
}

/// One entry of the `errors` array.
#[derive(Debug)]
struct GqlError {
    message: String,
    pos: Option<Pos>,
    path: Option<Vec<Value>>,
    code: &'static str,
}

impl GqlError {
    fn new(code: &'static str, message: String, pos: Option<Pos>) -> Self {
        GqlError {
            message,
            pos,
            path: None,
            code,
        }
    }

    fn validation(message: String, pos: Pos) -> Self {
        GqlError::new(CODE_VALIDATION, message, Some(pos))
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("message".into(), Value::String(self.message.clone()));
        if let Some(p) = self.pos {
            m.insert(
                "locations".into(),
                json!([{"line": p.line, "column": p.column}]),
            );
        }
        if let Some(path) = &self.path {
            m.insert("path".into(), Value::Array(path.clone()));
        }
        m.insert("extensions".into(), json!({ "code": self.code }));
        Value::Object(m)
    }
}

const CODE_PARSE: &str = "GRAPHQL_PARSE_FAILED";
const CODE_VALIDATION: &str = "GRAPHQL_VALIDATION_FAILED";
const CODE_COMPLEXITY: &str = "QUERY_COMPLEXITY";
const CODE_NULL: &str = "NULL_VALUE_IN_NON_NULL_FIELD";
const CODE_INPUT: &str = "BAD_USER_INPUT";

fn errors_only(errors: &[GqlError]) -> Value {
    json!({ "errors": errors.iter().map(GqlError::to_json).collect::<Vec<_>>() })
}

fn parse_error_message(e: &q::ParseError) -> String {
    let text = e.to_string();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    format!("Invalid Syntax: {}", lines.join("; "))
}

/// The mutations of a document, for the violation log: `mutation Name` or `mutation`, one
/// per mutation definition. A document that does not parse counts as a mutation when its
/// first word is `mutation`.
pub(crate) fn mutations_in(query: &str) -> Vec<String> {
    match q::parse_query::<&str>(query) {
        Ok(doc) => doc
            .definitions
            .iter()
            .filter_map(|d| match d {
                Definition::Operation(OperationDefinition::Mutation(m)) => Some(
                    m.name
                        .map_or_else(|| "mutation".to_owned(), |n| format!("mutation {n}")),
                ),
                _ => None,
            })
            .collect(),
        Err(_) => {
            let first = query
                .trim_start_matches(|c: char| c.is_whitespace() || c == ',' || c == '\u{feff}')
                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .next()
                .unwrap_or("");
            if first == "mutation" {
                vec!["mutation (unparsable document)".to_owned()]
            } else {
                Vec::new()
            }
        }
    }
}

/// Runs one GraphQL request against the state. Returns the JSON body (always HTTP 200).
pub(crate) fn execute(
    st: &State,
    company: &CompanyInfo,
    max_aliases: usize,
    query: &str,
    variables: &Map<String, Value>,
    operation_name: Option<&str>,
) -> Value {
    let doc = match q::parse_query::<&str>(query) {
        Ok(d) => d,
        Err(e) => {
            return errors_only(&[GqlError::new(CODE_PARSE, parse_error_message(&e), None)]);
        }
    };
    // Refused before anything else: the simulator serves no mutation (and attentive-sync
    // must never send one; the gate records the violation).
    for d in &doc.definitions {
        if let Definition::Operation(OperationDefinition::Mutation(m)) = d {
            return refuse_mutation(m.position);
        }
    }
    let mut fragments: HashMap<&str, &Fragment<'_>> = HashMap::new();
    let mut operations = Vec::new();
    for d in &doc.definitions {
        match d {
            Definition::Fragment(f) => {
                if fragments.insert(f.name, f).is_some() {
                    return errors_only(&[GqlError::validation(
                        format!("Validation error (DuplicateFragmentName): There can be only one fragment named '{}'", f.name),
                        f.position,
                    )]);
                }
            }
            Definition::Operation(op) => operations.push(op),
        }
    }
    let op = match operation_name {
        Some(wanted) => match operations
            .iter()
            .find(|op| operation_name_of(op) == Some(wanted))
        {
            Some(op) => *op,
            None => {
                return errors_only(&[GqlError::new(
                    CODE_VALIDATION,
                    format!("Unknown operation named '{wanted}'."),
                    None,
                )])
            }
        },
        None => match operations.as_slice() {
            [op] => *op,
            [] => {
                return errors_only(&[GqlError::new(
                    CODE_VALIDATION,
                    "The document contains no operation.".into(),
                    None,
                )])
            }
            _ => {
                return errors_only(&[GqlError::new(
                    CODE_VALIDATION,
                    "Must provide operation name if query contains multiple operations.".into(),
                    None,
                )])
            }
        },
    };
    let (set, var_defs, directives): (&Set<'_>, &[VarDef<'_>], usize) = match op {
        OperationDefinition::Query(q) => (
            &q.selection_set,
            &q.variable_definitions,
            q.directives.len(),
        ),
        OperationDefinition::SelectionSet(s) => (s, &[], 0),
        OperationDefinition::Subscription(s) => {
            return errors_only(&[GqlError::validation(
                "Validation error: Schema is not configured for subscriptions.".into(),
                s.position,
            )])
        }
        OperationDefinition::Mutation(m) => return refuse_mutation(m.position),
    };
    let mut ctx = Ctx {
        fragments,
        var_defs: var_defs.iter().map(|v| (v.name, v)).collect(),
        variables,
        errors: Vec::new(),
        users: 0,
    };
    if directives > 0 {
        ctx.errors.push(GqlError::new(
            CODE_VALIDATION,
            "Validation error: directives are not supported by attentive-sim.".into(),
            None,
        ));
    }
    ctx.check_variables(var_defs);
    ctx.validate_set(Ty::Query, set, &mut Vec::new());
    if !ctx.errors.is_empty() {
        return errors_only(&ctx.errors);
    }
    if max_aliases > 0 && ctx.users > max_aliases {
        return errors_only(&[GqlError::new(
            CODE_COMPLEXITY,
            format!(
                "Query is too complex: {} fields exceeds the maximum of {max_aliases}",
                ctx.users
            ),
            None,
        )]);
    }
    let exec = Exec {
        ctx: &ctx,
        st,
        company,
    };
    let mut errors = Vec::new();
    let data = exec.object(Ty::Query, &[set], &mut Vec::new(), None, &mut errors);
    let mut body = Map::new();
    if !errors.is_empty() {
        body.insert(
            "errors".into(),
            Value::Array(errors.iter().map(GqlError::to_json).collect()),
        );
    }
    body.insert("data".into(), Value::Object(data));
    Value::Object(body)
}

fn operation_name_of<'q>(op: &OperationDefinition<'q, &'q str>) -> Option<&'q str> {
    match op {
        OperationDefinition::Query(q) => q.name,
        OperationDefinition::Mutation(m) => m.name,
        OperationDefinition::Subscription(s) => s.name,
        OperationDefinition::SelectionSet(_) => None,
    }
}

fn refuse_mutation(pos: Pos) -> Value {
    errors_only(&[GqlError::validation(
        "Validation error: Schema is not configured for mutations (attentive-sim serves \
         lookups only)."
            .into(),
        pos,
    )])
}

/// Validation state of one request.
struct Ctx<'q, 'v> {
    fragments: HashMap<&'q str, &'q Fragment<'q>>,
    var_defs: HashMap<&'q str, &'q VarDef<'q>>,
    variables: &'v Map<String, Value>,
    errors: Vec<GqlError>,
    /// `user` fields selected (the alias count).
    users: usize,
}

/// The named type under `NonNull`/`List` wrappers, and whether it is a plain (non-list)
/// type and non-null.
fn base_type<'q>(t: &'q q::Type<'q, &'q str>) -> (&'q str, bool, bool) {
    match t {
        q::Type::NamedType(n) => (n, true, false),
        q::Type::ListType(inner) => (base_type(inner).0, false, false),
        q::Type::NonNullType(inner) => {
            let (n, plain, _) = base_type(inner);
            (n, plain, true)
        }
    }
}

impl<'q> Ctx<'q, '_> {
    fn check_variables(&mut self, defs: &'q [VarDef<'q>]) {
        let mut seen = Vec::new();
        for d in defs {
            if seen.contains(&d.name) {
                self.errors.push(GqlError::validation(
                    format!("Validation error (DuplicateVariableName): There can be only one variable named '${}'", d.name),
                    d.position,
                ));
            }
            seen.push(d.name);
            let (ty, plain, non_null) = base_type(&d.var_type);
            if !["String", "ID", "Int", "Float", "Boolean"].contains(&ty) {
                self.errors.push(GqlError::validation(
                    format!(
                        "Validation error (UnknownType): Unknown type '{ty}' of variable '${}'",
                        d.name
                    ),
                    d.position,
                ));
                continue;
            }
            let given = self.variables.get(d.name).filter(|v| !v.is_null());
            if given.is_none() && d.default_value.is_none() && non_null {
                self.errors.push(GqlError::new(
                    CODE_INPUT,
                    format!("Variable '{}' has an invalid value: Variable '{}' has coerced Null value for NonNull type '{ty}!'", d.name, d.name),
                    Some(d.position),
                ));
            }
            if let Some(v) = given {
                if plain && matches!(ty, "String" | "ID") && !v.is_string() {
                    self.errors.push(GqlError::new(
                        CODE_INPUT,
                        format!("Variable '{}' has an invalid value: expected type '{ty}' but was '{v}'", d.name),
                        Some(d.position),
                    ));
                }
            }
        }
    }

    /// The fields of a selection set, fragments expanded, with errors for bad fragments.
    fn collect(
        &mut self,
        ty: Ty,
        set: &'q Set<'q>,
        out: &mut Vec<&'q Field<'q>>,
        visiting: &mut Vec<&'q str>,
    ) {
        for item in &set.items {
            match item {
                Selection::Field(f) => {
                    if !f.directives.is_empty() {
                        self.errors.push(GqlError::validation(
                            "Validation error: directives are not supported by attentive-sim."
                                .into(),
                            f.position,
                        ));
                    }
                    out.push(f);
                }
                Selection::InlineFragment(inline) => {
                    if let Some(TypeCondition::On(t)) = &inline.type_condition {
                        if *t != ty.name() {
                            self.errors.push(GqlError::validation(
                                format!("Validation error (InlineFragmentTypeConditionInvalid): Fragment cannot be spread here as objects of type '{}' can never be of type '{t}'", ty.name()),
                                inline.position,
                            ));
                            continue;
                        }
                    }
                    self.collect(ty, &inline.selection_set, out, visiting);
                }
                Selection::FragmentSpread(spread) => {
                    let name = spread.fragment_name;
                    let Some(frag) = self.fragments.get(name).copied() else {
                        self.errors.push(GqlError::validation(
                            format!(
                                "Validation error (UndefinedFragment): Undefined fragment '{name}'"
                            ),
                            spread.position,
                        ));
                        continue;
                    };
                    if visiting.contains(&name) {
                        self.errors.push(GqlError::validation(
                            format!(
                                "Validation error (FragmentCycle): Fragment cycle through '{name}'"
                            ),
                            spread.position,
                        ));
                        continue;
                    }
                    let TypeCondition::On(t) = &frag.type_condition;
                    if *t != ty.name() {
                        self.errors.push(GqlError::validation(
                            format!("Validation error (InvalidFragmentType): Fragment '{name}' cannot be spread here as objects of type '{}' can never be of type '{t}'", ty.name()),
                            spread.position,
                        ));
                        continue;
                    }
                    visiting.push(name);
                    self.collect(ty, &frag.selection_set, out, visiting);
                    visiting.pop();
                }
            }
        }
    }

    fn validate_set(&mut self, ty: Ty, set: &'q Set<'q>, path: &mut Vec<&'q str>) {
        let mut fields = Vec::new();
        self.collect(ty, set, &mut fields, &mut Vec::new());
        let mut by_key: HashMap<&str, &Field<'_>> = HashMap::new();
        for f in fields {
            let key = f.alias.unwrap_or(f.name);
            if let Some(prev) = by_key.get(key) {
                if prev.name != f.name || prev.arguments != f.arguments {
                    self.errors.push(GqlError::validation(
                        format!("Validation error (FieldsConflict): '{key}' : fields '{}' and '{}' have different names or arguments", prev.name, f.name),
                        f.position,
                    ));
                }
            } else {
                by_key.insert(key, f);
            }
            let Some(out) = ty.field(f.name) else {
                let mut at = path.clone();
                at.push(f.name);
                self.errors.push(GqlError::validation(
                    format!(
                        "Validation error (FieldUndefined@[{}]) : Field '{}' in type '{}' is undefined",
                        at.join("/"),
                        f.name,
                        ty.name()
                    ),
                    f.position,
                ));
                continue;
            };
            self.validate_arguments(ty, f);
            match out {
                Out::Scalar => {
                    if !f.selection_set.items.is_empty() {
                        self.errors.push(GqlError::validation(
                            format!("Validation error (SubselectionNotAllowed): Sub selection not allowed on leaf type of field '{}'", f.name),
                            f.position,
                        ));
                    }
                }
                Out::Object(child) => {
                    if f.selection_set.items.is_empty() {
                        self.errors.push(GqlError::validation(
                            format!("Validation error (SubselectionRequired): Sub selection required for type '{}' of field '{}'", child.name(), f.name),
                            f.position,
                        ));
                    }
                    if child == Ty::User {
                        self.users += 1;
                    }
                    path.push(f.name);
                    self.validate_set(child, &f.selection_set, path);
                    path.pop();
                }
            }
        }
    }

    fn validate_arguments(&mut self, ty: Ty, f: &'q Field<'q>) {
        let allowed = ty.arguments(f.name);
        let mut seen = Vec::new();
        for (name, value) in &f.arguments {
            if !allowed.contains(name) {
                self.errors.push(GqlError::validation(
                    format!("Validation error (UnknownArgument): Unknown field argument '{name}' on field '{}.{}'", ty.name(), f.name),
                    f.position,
                ));
                continue;
            }
            if seen.contains(name) {
                self.errors.push(GqlError::validation(
                    format!("Validation error (DuplicateArgumentNames): There can be only one argument named '{name}'"),
                    f.position,
                ));
            }
            seen.push(*name);
            match value {
                q::Value::String(_) | q::Value::Null => {}
                q::Value::Variable(v) => match self.var_defs.get(v).copied() {
                    None => self.errors.push(GqlError::validation(
                        format!("Validation error (UndefinedVariable): Undefined variable '${v}'"),
                        f.position,
                    )),
                    Some(def) => {
                        let (t, plain, _) = base_type(&def.var_type);
                        if t != "String" || !plain {
                            self.errors.push(GqlError::validation(
                                format!("Validation error (VariableTypeMismatch): Variable '${v}' of type '{}' used in position expecting type 'String'", type_text(&def.var_type)),
                                f.position,
                            ));
                        }
                    }
                },
                other => self.errors.push(GqlError::validation(
                    format!("Validation error (WrongType): argument '{name}' with value '{other}' is not a valid 'String'"),
                    f.position,
                )),
            }
        }
    }

    /// The string value of an argument (literal, variable or the variable's default).
    fn argument(&self, f: &Field<'_>, name: &str) -> Option<String> {
        let value = f
            .arguments
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)?;
        match value {
            q::Value::String(s) => Some(s.clone()),
            q::Value::Variable(v) => match self.variables.get(*v) {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Null) => None,
                Some(_) => None,
                None => match self.var_defs.get(v).and_then(|d| d.default_value.as_ref()) {
                    Some(GValue::String(s)) => Some(s.clone()),
                    _ => None,
                },
            },
            _ => None,
        }
    }
}

fn type_text<'a>(t: &q::Type<'a, &'a str>) -> String {
    match t {
        q::Type::NamedType(n) => (*n).to_owned(),
        q::Type::ListType(inner) => format!("[{}]", type_text(inner)),
        q::Type::NonNullType(inner) => format!("{}!", type_text(inner)),
    }
}

/// Execution of a validated operation.
struct Exec<'a, 'q, 'v> {
    ctx: &'a Ctx<'q, 'v>,
    st: &'a State,
    company: &'a CompanyInfo,
}

impl<'q> Exec<'_, 'q, '_> {
    /// The fields of `sets` (all the selection sets merged under one response key), grouped
    /// by response key in first-seen order.
    fn grouped(&self, ty: Ty, sets: &[&'q Set<'q>]) -> Vec<(&'q str, Vec<&'q Field<'q>>)> {
        let mut fields = Vec::new();
        for set in sets {
            collect_valid(self.ctx, ty, set, &mut fields);
        }
        let mut groups: Vec<(&str, Vec<&Field<'_>>)> = Vec::new();
        for f in fields {
            let key = f.alias.unwrap_or(f.name);
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, list)) => list.push(f),
                None => groups.push((key, vec![f])),
            }
        }
        groups
    }

    fn object(
        &self,
        ty: Ty,
        sets: &[&'q Set<'q>],
        path: &mut Vec<Value>,
        user: Option<&Contact>,
        errors: &mut Vec<GqlError>,
    ) -> Map<String, Value> {
        let mut out = Map::new();
        for (key, fields) in self.grouped(ty, sets) {
            let f = fields[0];
            let sub: Vec<&Set<'_>> = fields.iter().map(|f| &f.selection_set).collect();
            path.push(Value::String(key.to_owned()));
            let value = match ty.field(f.name) {
                Some(Out::Object(Ty::User)) => self.user(f, &sub, path, errors),
                Some(Out::Object(child)) => {
                    Value::Object(self.object(child, &sub, path, None, errors))
                }
                Some(Out::Scalar) => match self.scalar(ty, f.name, user) {
                    Some(s) => Value::String(s),
                    None => {
                        let at: Vec<String> = path
                            .iter()
                            .map(|p| p.as_str().unwrap_or("").to_owned())
                            .collect();
                        errors.push(GqlError {
                            message: format!(
                                "The field at path '/{}' was declared as a non null type, but \
                                 the code involved in retrieving data has wrongly returned a \
                                 null value.",
                                at.join("/")
                            ),
                            pos: Some(f.position),
                            path: Some(path.clone()),
                            code: CODE_NULL,
                        });
                        Value::Null
                    }
                },
                None => Value::Null,
            };
            path.pop();
            out.insert(key.to_owned(), value);
        }
        out
    }

    fn scalar(&self, ty: Ty, field: &str, user: Option<&Contact>) -> Option<String> {
        let standard = |name: &str| {
            user.and_then(|c| c.standard(name))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        match (ty, field) {
            (_, "__typename") => Some(ty.name().to_owned()),
            (Ty::App, "name") => Some(self.company.application_name.clone()),
            (Ty::Company, "id") => Some(self.company.company_id.clone()),
            (Ty::Company, "name") => Some(self.company.company_name.clone()),
            (Ty::User, "id") => user.map(Contact::graphql_id),
            (Ty::User, "email") => user.and_then(|c| c.email.clone()),
            (Ty::User, "subscribedPhone") => {
                user.filter(|c| c.subscribed).and_then(|c| c.phone.clone())
            }
            (Ty::User, "firstName") => standard("firstName"),
            (Ty::User, "lastName") => standard("lastName"),
            _ => None,
        }
    }

    /// `user(email:)` / `user(phone:)`: the contact's object, or null when nobody matches,
    /// when the arguments are bad (with an error), or when a non-null field it selects has
    /// no value (with an error per such field).
    fn user(
        &self,
        f: &Field<'_>,
        sets: &[&'q Set<'q>],
        path: &mut Vec<Value>,
        errors: &mut Vec<GqlError>,
    ) -> Value {
        let email = self.ctx.argument(f, "email");
        let phone = self.ctx.argument(f, "phone");
        let input_error = |message: String| GqlError {
            message,
            pos: Some(f.position),
            path: Some(path.clone()),
            code: CODE_INPUT,
        };
        let contact = match (email, phone) {
            (Some(e), None) => {
                if let Err(m) = validate::check_email(&e, "email") {
                    errors.push(input_error(m));
                    return Value::Null;
                }
                self.st.find_by_query(Some(&e), None)
            }
            (None, Some(p)) => {
                if let Err(m) = validate::check_phone(&p, "phone") {
                    errors.push(input_error(m));
                    return Value::Null;
                }
                self.st.find_by_query(None, Some(&p))
            }
            _ => {
                errors.push(input_error(
                    "exactly one of the arguments 'email' or 'phone' is required".into(),
                ));
                return Value::Null;
            }
        };
        let Some(contact) = contact else {
            return Value::Null;
        };
        let before = errors.len();
        let object = self.object(Ty::User, sets, path, Some(contact), errors);
        if errors.len() > before {
            // A non-null field was null: the null propagates to the nullable `user`.
            Value::Null
        } else {
            Value::Object(object)
        }
    }
}

/// [`Ctx::collect`] for a validated document (no errors to report).
fn collect_valid<'q>(ctx: &Ctx<'q, '_>, ty: Ty, set: &'q Set<'q>, out: &mut Vec<&'q Field<'q>>) {
    for item in &set.items {
        match item {
            Selection::Field(f) => out.push(f),
            Selection::InlineFragment(inline) => {
                let applies = match &inline.type_condition {
                    Some(TypeCondition::On(t)) => *t == ty.name(),
                    None => true,
                };
                if applies {
                    collect_valid(ctx, ty, &inline.selection_set, out);
                }
            }
            Selection::FragmentSpread(spread) => {
                if let Some(frag) = ctx.fragments.get(spread.fragment_name) {
                    collect_valid(ctx, ty, &frag.selection_set, out);
                }
            }
        }
    }
}
