"""The console's words in Spanish (the default) and English: one table, so that a page
template names a key and never carries a language of its own."""

from __future__ import annotations

LANGUAGES = ("es", "en")

# key -> (Spanish, English)
TEXT: dict[str, tuple[str, str]] = {
    "console": ("Consola de soporte", "Support console"),
    "queue": ("Cola", "Queue"),
    "sign_in": ("Entrar", "Sign in"),
    "sign_out": ("Salir", "Sign out"),
    "signed_in_as": ("Conectado como", "Signed in as"),
    "address": ("Tu dirección de correo", "Your mail address"),
    "password": ("Contraseña", "Password"),
    "send_link": ("Enviarme un enlace", "Mail me a link"),
    "by_link": ("Entrar con un enlace por correo", "Sign in with a link by mail"),
    "by_password": ("Entrar con contraseña", "Sign in with a password"),
    "link_sent": (
        "Si esa dirección es de un agente, le enviamos un enlace para entrar. Revisa tu correo.",
        "If that address is an agent's, a sign-in link is on its way. Check your mail.",
    ),
    "wrong_password": (
        "Dirección o contraseña incorrectas.",
        "Wrong address or password.",
    ),
    "link_confirm": (
        "Pulsa el botón para entrar a la consola.",
        "Press the button to sign in to the console.",
    ),
    "link_invalid": (
        "Este enlace no sirve: ya se usó, caducó o no existe. Pide uno nuevo.",
        "This link does not work: it was used, it expired or it does not exist. Ask for a new one.",
    ),
    "too_many": (
        "Demasiados intentos de entrar desde tu dirección. Espera un minuto y vuelve a probar.",
        "Too many sign-in attempts from your address. Wait a minute and try again.",
    ),
    "forbidden": (
        "El formulario caducó o no vino de esta consola. Vuelve a cargar la página.",
        "The form expired or did not come from this console. Reload the page.",
    ),
    "language": ("English", "Español"),
    # the queue
    "filters": ("Filtros", "Filters"),
    "status": ("Estado", "Status"),
    "team": ("Equipo", "Team"),
    "assignee": ("Asignado a", "Assignee"),
    "category": ("Categoría", "Category"),
    "level": ("Nivel", "Level"),
    "breached": ("SLA vencido", "SLA breached"),
    "tag": ("Etiqueta", "Tag"),
    "more_filters": ("Más filtros", "More filters"),
    "due_within": ("Vence en", "Due within"),
    "search": ("Buscar", "Search"),
    "search_words": ("Palabras", "Words"),
    "any": ("(todos)", "(any)"),
    "me": ("yo", "me"),
    "open": ("abiertos", "open"),
    "no_tickets": ("No hay tickets.", "No tickets."),
    "subject": ("Asunto", "Subject"),
    "requester": ("Solicitante", "Requester"),
    "priority": ("Prioridad", "Priority"),
    "due": ("Vence", "Due"),
    "apply": ("Aplicar", "Apply"),
    "nobody": ("nadie", "nobody"),
    # a ticket
    "thread": ("Conversación", "Thread"),
    "quoted": ("Texto citado", "Quoted text"),
    "html_version": ("Versión HTML (saneada)", "HTML version (sanitised)"),
    "attachments": ("Adjuntos", "Attachments"),
    "history": ("Historial", "History"),
    "sla": ("Plazos (SLA)", "SLA clocks"),
    "participants": ("Participantes", "Participants"),
    "similar": ("Tickets parecidos", "Similar tickets"),
    "duplicates": ("Posibles duplicados", "Possible duplicates"),
    "related": ("Relacionados", "Related"),
    "by": ("por", "by"),
    "from": ("de", "from"),
    "actions": ("Acciones", "Actions"),
    "reply": ("Responder al cliente", "Reply to the customer"),
    "reply_text": ("Respuesta", "Answer"),
    "attach": ("Adjuntar archivos", "Attach files"),
    "then_status": ("Y dejar en estado", "Then set status"),
    "unchanged": ("(sin cambio)", "(unchanged)"),
    "send": ("Enviar", "Send"),
    "note": ("Nota interna", "Internal note"),
    "add_note": ("Añadir nota", "Add note"),
    "change_status": ("Cambiar estado", "Change status"),
    "why": ("Motivo (opcional)", "Why (optional)"),
    "assign": ("Asignar", "Assign"),
    "agent": ("Agente", "Agent"),
    "escalate": ("Escalar a segundo nivel", "Escalate to the second level"),
    "reason": ("Motivo", "Reason"),
    "type": ("Tipo", "Type"),
    "impact": ("Impacto", "Impact"),
    "urgency": ("Urgencia", "Urgency"),
    "set_priority": ("Fijar prioridad", "Set priority"),
    "set_category": ("Fijar categoría", "Set category"),
    "cc": ("En copia (CC)", "CC"),
    "cc_add": ("Añadir en copia", "Add to CC"),
    "cc_remove": ("Quitar de copia", "Remove from CC"),
    "merge": ("Fusionar otro ticket en este", "Merge another ticket into this one"),
    "other_ticket": ("Número del otro ticket", "The other ticket's number"),
    "save": ("Guardar", "Save"),
    "clock_first_response": ("Primera respuesta", "First response"),
    "clock_resolution": ("Resolución", "Resolution"),
    "target_hours": ("objetivo {hours} h hábiles", "target {hours} business h"),
    "paused_since": ("En pausa desde", "Paused since"),
    "paused_so_far": (
        "En pausa hasta ahora: {hours} h hábiles",
        "Paused so far: {hours} business h",
    ),
    "fired": ("Aviso enviado", "Notice sent"),
    "state_running": ("en curso", "running"),
    "state_breached": ("vencido", "breached"),
    "state_stopped": ("cumplido", "met"),
    "state_paused": ("en pausa", "paused"),
    "state_not running": ("sin reloj", "not running"),
    "set_requester": ("Cambiar solicitante", "Change requester"),
    "requester_address": ("Correo del solicitante", "Requester's address"),
    # a new ticket
    "new_ticket": ("Nuevo ticket", "New ticket"),
    "new_ticket_hint": (
        "Para registrar una petición que llegó por teléfono, chat o en persona.",
        "To register a request that came by phone, chat or in person.",
    ),
    "what_they_asked": ("Qué pidió", "What they asked"),
    "cc_list": ("En copia (direcciones separadas por comas)", "CC (addresses, comma-separated)"),
    "source": ("Vía", "Came by"),
    "source_phone": ("Teléfono", "Phone"),
    "source_chat": ("Chat", "Chat"),
    "source_visit": ("En persona", "In person"),
    "customer_language": ("Idioma del cliente", "Customer's language"),
    "send_ack": ("Enviar acuse de recibo al cliente", "Send the customer an acknowledgement"),
    "open_ticket": ("Abrir ticket", "Open ticket"),
    "created": ("Ticket #{number} abierto.", "Ticket #{number} opened."),
    # the mail queues
    "inbound": ("Entrada", "Inbound"),
    "inbound_hint": (
        "Los correos recibidos tal como llegaron. Un correo fallido se puede procesar de "
        "nuevo; uno retenido como spam se puede liberar para que abra su ticket.",
        "Mail as it was received. A failed one can be processed again; one kept as spam "
        "can be released to open its ticket.",
    ),
    "outbox": ("Salida", "Outbox"),
    "outbox_hint": (
        "Los correos que buzón envía. Uno fallido vuelve a la cola con Reintentar.",
        "The mail buzón sends. A failed one goes back in line with Retry.",
    ),
    "webhooks": ("Webhooks", "Webhooks"),
    "webhooks_hint": (
        "Los avisos a otras aplicaciones. Uno agotado (sin más intentos) vuelve a la cola "
        "con Reintentar.",
        "Notices to other applications. A dead one (no attempts left) goes back in line "
        "with Retry.",
    ),
    "addresses": ("Direcciones", "Addresses"),
    "addresses_hint": (
        "Las direcciones de los clientes. A una que rebota (buzón lleno, no existe) no se "
        "le envía correo hasta que caduca la marca o la quitas aquí.",
        "Customers' addresses. One that bounces (mailbox full, no such user) gets no mail "
        "until the mark expires or you clear it here.",
    ),
    "email": ("Dirección", "Address"),
    "state_bouncing": ("rebota", "bouncing"),
    "state_ok": ("bien", "ok"),
    "bounced_at": ("Último rebote", "Last bounce"),
    "clear_mark": ("Quitar marca", "Clear mark"),
    "mark_cleared": (
        "{address}: marca quitada; vuelve a recibir correo.",
        "{address}: mark cleared; mail to it resumes.",
    ),
    "not_bouncing": (
        "{address} no estaba marcada como que rebota.",
        "{address} was not marked bouncing.",
    ),
    "received": ("Recibido", "Received"),
    "created_at": ("Creado", "Created"),
    "ticket": ("Ticket", "Ticket"),
    "origin": ("Origen", "Origin"),
    "attempts": ("Intentos", "Attempts"),
    "recipients": ("Destinatarios", "Recipients"),
    "kind": ("Tipo", "Kind"),
    "last_error": ("Último error", "Last error"),
    "event": ("Evento", "Event"),
    "hook": ("Destino", "Hook"),
    "no_rows": ("No hay nada aquí.", "Nothing here."),
    "reprocess": ("Procesar de nuevo", "Process again"),
    "reprocess_failed": ("Procesar de nuevo los fallidos", "Process the failed ones again"),
    "release": ("No es spam", "Not spam"),
    "retry": ("Reintentar", "Retry"),
    "retry_dead": ("Reintentar los agotados", "Retry the dead ones"),
    "reprocessed": (
        "Procesados de nuevo: {count} ({states}).",
        "Processed again: {count} ({states}).",
    ),
    "released": (
        "Mensaje {id} liberado: ticket #{number}.",
        "Message {id} released: ticket #{number}.",
    ),
    "released_no_ticket": (
        "Mensaje {id} liberado; no abrió ticket ({state}).",
        "Message {id} released; it opened no ticket ({state}).",
    ),
    "retried": (
        "{id}: vuelve a la cola; se enviará en breve.",
        "{id}: back in line; it goes out shortly.",
    ),
    "retried_dead": ("{count} entregas vuelven a la cola.", "{count} deliveries back in line."),
    "state_pending": ("pendiente", "pending"),
    "state_processing": ("procesando", "processing"),
    "state_processed": ("procesado", "processed"),
    "state_ignored": ("ignorado", "ignored"),
    "state_failed": ("fallido", "failed"),
    "state_quarantined": ("en cuarentena", "quarantined"),
    "state_spam": ("spam", "spam"),
    "state_sent": ("enviado", "sent"),
    "state_dead": ("agotado", "dead"),
    "state_deferred": ("aplazado", "deferred"),
    # what a thread and a history name: `term("kind", a.kind)` in a template
    "kind_inbound": ("recibido", "received"),
    "kind_outbound": ("enviado", "sent"),
    "kind_note": ("nota interna", "internal note"),
    "role_requester": ("solicitante", "requester"),
    "role_watcher": ("en copia", "CC"),
    "role_agent": ("agente", "agent"),
    "mail_acknowledgement": ("acuse de recibo", "acknowledgement"),
    "mail_reply": ("respuesta", "reply"),
    "mail_resolved": ("aviso de resuelto", "resolved notice"),
    "mail_reminder": ("recordatorio", "reminder"),
    "mail_survey": ("encuesta", "survey"),
    "mail_status_changed": ("cambio de estado", "status change"),
    "mail_staff_notice": ("aviso al equipo", "staff notice"),
    "mail_sign_in": ("enlace de entrada", "sign-in link"),
    "mail_sla_warning": ("aviso de SLA", "SLA warning"),
    "mail_sla_breach": ("SLA vencido", "SLA breach"),
    # the priority matrix's shipped impact and urgency names (configured ones show as set)
    "high": ("alta", "high"),
    "medium": ("media", "medium"),
    "low": ("baja", "low"),
    "event_created": ("creado", "created"),
    "event_article": ("mensaje", "message"),
    "event_note": ("nota", "note"),
    "event_participant": ("participante", "participant"),
    "event_priority": ("prioridad", "priority"),
    "event_category": ("categoría", "category"),
    "event_requester": ("solicitante", "requester"),
    "event_merged": ("fusión", "merge"),
    "event_linked": ("seguimiento", "follow-up"),
    "event_status": ("estado", "status"),
    "event_assignee": ("asignado a", "assignee"),
    "event_team": ("equipo", "team"),
    "event_level": ("nivel", "level"),
    "event_notified": ("aviso enviado", "notified"),
    "event_delivery_refused": ("envío rechazado", "delivery refused"),
    "event_notify_error": ("error al avisar", "notice failed"),
    "event_notify_refused": ("aviso no enviado", "notice not sent"),
    "event_watchers_not_added": ("copias no añadidas", "CCs not added"),
    # flash messages
    "done": ("Hecho: {what}.", "Done: {what}."),
    "refused": ("No se pudo: {why}", "Could not do it: {why}"),
    "unsent": (
        "La respuesta quedó en el ticket pero no se envió a nadie: {who}",
        "The reply is on the ticket but was mailed to nobody: {who}",
    ),
    "too_large": (
        "Los adjuntos pesan demasiado (máximo {mb} MB en total).",
        "The attachments are too large (at most {mb} MB in all).",
    ),
    "not_found": ("No existe.", "Not found."),
}

STATUS_NAMES: dict[str, tuple[str, str]] = {
    "new": ("Nuevo", "New"),
    "in_progress": ("En curso", "In progress"),
    "waiting_on_customer": ("Esperando al cliente", "Waiting on customer"),
    "on_hold": ("Suspendido", "On hold"),
    "resolved": ("Resuelto", "Resolved"),
    "closed": ("Cerrado", "Closed"),
}


def term(language: str, prefix: str, value: str) -> str:
    """A stored name (an article's kind, a role, an event) in `language`; the name
    itself when the table has no word for it (a new kind shows, untranslated)."""
    key = f"{prefix}_{value}"
    return translate(language, key) if key in TEXT else value


def translate(language: str, key: str, **values: object) -> str:
    """The text of `key` in `language` (Spanish for any other), with `values` filled in."""
    pair = TEXT.get(key) or STATUS_NAMES.get(key) or (key, key)
    text = pair[1] if language == "en" else pair[0]
    return text.format(**values) if values else text
