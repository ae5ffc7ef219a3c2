"""What an operator runs beside the request path; the request path never imports it."""
