"""The USSD menus: named screens and their transitions, readable as a map of *384*96#.

The screens arrive with the USSD issue; this package is where they live so that the
menu map stays apart from the web layer that carries it.
"""
