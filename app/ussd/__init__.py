"""The USSD engine: request parsing, the session store and the hop loop. The screens
themselves live in `ussd_menus/`, as a map that reads like the menu the member sees."""
