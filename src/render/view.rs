//! What a template sees of a [`Context`]: minijinja objects that read the
//! context where it is, field by field as the template asks, instead of a
//! copy of it converted into template values. That copy was most of
//! `render`'s memory and time at cluster scale (a value tree of every
//! backend, twice: a service's and a port's); a view costs one small
//! allocation per access.
//!
//! Every field reads as the text the record holds, as `list --json` shows
//! it (`"80"`, not `80`), so templates compare it with strings.

use std::sync::Arc;

use minijinja::value::{Enumerator, Object, ObjectRepr, Value};

use std::fmt::{self, Write as _};

use super::context::{Address, Backend, Buffer, Context};
use crate::record::Protocol;

/// The template's root: `services`.
pub fn root(context: Arc<Context>) -> Value {
    Value::from_object(Root(context))
}

#[derive(Debug)]
struct Root(Arc<Context>);

impl Object for Root {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        match key.as_str()? {
            "services" => Some(Value::from_object(Services(self.0.clone()))),
            // How many TCP frontends there are in all: a format that
            // refuses an empty section (Traefik's `tcp:`) leaves it out
            // when there are none.
            "tcp_ports" => {
                let ports = self.0.services.iter().flat_map(|s| &s.ports);
                let tcp = ports.filter(|p| p.port_type == Protocol::Tcp).count();
                Some(Value::from(tcp))
            }
            _ => None,
        }
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Str(&["services", "tcp_ports"])
    }
}

/// `services`, sorted by name.
#[derive(Debug)]
struct Services(Arc<Context>);

impl Object for Services {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Seq
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let service = key.as_usize()?;
        self.0.services.get(service)?;
        Some(Value::from_object(ServiceView {
            context: self.0.clone(),
            service,
        }))
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Seq(self.0.services.len())
    }
}

/// One service: `name`, `backends`, `ports`.
#[derive(Debug)]
struct ServiceView {
    context: Arc<Context>,
    /// Its index in `services`.
    service: usize,
}

impl Object for ServiceView {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let service = &self.context.services[self.service];
        Some(match key.as_str()? {
            "name" => Value::from(service.name.as_str()),
            "backends" => Value::from_object(Backends {
                context: self.context.clone(),
                service: self.service,
                port: None,
            }),
            "ports" => Value::from_object(Ports {
                context: self.context.clone(),
                service: self.service,
            }),
            _ => return None,
        })
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Str(&["name", "backends", "ports"])
    }
}

/// A service's `ports`.
#[derive(Debug)]
struct Ports {
    context: Arc<Context>,
    service: usize,
}

impl Object for Ports {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Seq
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let port = key.as_usize()?;
        self.context.services[self.service].ports.get(port)?;
        Some(Value::from_object(PortView {
            context: self.context.clone(),
            service: self.service,
            port,
        }))
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Seq(self.context.services[self.service].ports.len())
    }
}

/// One port of a service: `private_port`, `port_type`, `backends`.
#[derive(Debug)]
struct PortView {
    context: Arc<Context>,
    service: usize,
    port: usize,
}

impl Object for PortView {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let port = &self.context.services[self.service].ports[self.port];
        Some(match key.as_str()? {
            "private_port" => text(port.private_port),
            "port_type" => Value::from(port.port_type.as_str()),
            "backends" => Value::from_object(Backends {
                context: self.context.clone(),
                service: self.service,
                port: Some(self.port),
            }),
            _ => return None,
        })
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Str(&["private_port", "port_type", "backends"])
    }
}

/// The backends of a service, or of one of its ports.
#[derive(Debug)]
struct Backends {
    context: Arc<Context>,
    service: usize,
    /// `None`: the service's own list.
    port: Option<usize>,
}

impl Backends {
    fn list(&self) -> &[Backend] {
        let service = &self.context.services[self.service];
        match self.port {
            Some(port) => &service.ports[port].backends,
            None => &service.backends,
        }
    }
}

impl Object for Backends {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Seq
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let backend = key.as_usize()?;
        self.list().get(backend)?;
        Some(Value::from_object(BackendView {
            list: self.clone(),
            backend,
        }))
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Seq(self.list().len())
    }
}

/// One backend: its fields as docs/render.md lists them.
#[derive(Debug)]
struct BackendView {
    list: Arc<Backends>,
    backend: usize,
}

const BACKEND_FIELDS: &[&str] = &[
    "name",
    "host",
    "ip",
    "public_port",
    "address",
    "private_port",
    "port_type",
    "container",
    "image",
];

impl Object for BackendView {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let backend = &self.list.list()[self.backend];
        Some(match key.as_str()? {
            "name" => {
                let mut name = Buffer::<128>::default();
                backend.write_name(&mut name);
                Value::from(name.as_str())
            }
            "host" => text(backend.host),
            "ip" => text(backend.ip),
            "public_port" => text(backend.public_port),
            "address" => text(Address(backend.ip, backend.public_port)),
            "private_port" => text(backend.private_port),
            "port_type" => Value::from(backend.port_type.as_str()),
            "container" => Value::from(backend.container.as_str()),
            "image" => Value::from(backend.image.as_str()),
            _ => return None,
        })
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Str(BACKEND_FIELDS)
    }
}

/// `value` as text, written on the stack: a short text (an address, a
/// port) then costs the template value no allocation at all.
fn text(value: impl fmt::Display) -> Value {
    let mut text = Buffer::<64>::default();
    match write!(text, "{value}") {
        Ok(()) => Value::from(text.as_str()),
        Err(_) => Value::from(value.to_string()),
    }
}
